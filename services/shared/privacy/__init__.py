"""Per-client data keys and what an erased event reads as (issue 16): what every store's mapper needs.
The erasure itself (holds, four eyes, shredding) is services.privacy.erasure."""
