"""The FHIR R4 Backport kind of subscription (HL7 "Subscriptions R5 Backport" IG).

Pure parts, no I/O: the topic catalogue (:mod:`.topics`), the backport-profile
``Subscription`` read into its stored form (:mod:`.subscription`) and the notification
``history`` Bundles with their subscription-status ``Parameters`` (:mod:`.notifications`).
"""
