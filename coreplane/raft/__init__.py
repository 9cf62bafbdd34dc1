"""Consensus adapter: the only importer of pysyncobj and lmdb (journal, wire, engine)."""
