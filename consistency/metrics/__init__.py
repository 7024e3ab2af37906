"""Sample-quality metrics (numpy / scipy, each next to its noise floor) and the feature networks they read
(the in-project classifier, FID Inception)."""
