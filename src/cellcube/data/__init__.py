"""Pairs of texts: records, readers, built-in corpora, the split, expansion, inspection."""
