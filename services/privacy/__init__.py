"""A client's rights over their records (issue 16): legal holds and four-eyes erasure by crypto-shredding
(``erasure``). The keys themselves are services.shared.privacy."""
