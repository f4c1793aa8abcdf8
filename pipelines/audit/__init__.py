"""Data audit: screening of images that are not faces of the expected kind, perceptual hashes, duplicate groups
and the split-leakage policy, and the audit report of a shard set (see README "Data audit")."""
