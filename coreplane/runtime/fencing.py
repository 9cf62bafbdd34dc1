"""Re-exports `FencedResource`, which moved to `coreplane.sdk.fencing` (a resource owner
embeds it without the server side: the SDK loads neither pysyncobj nor lmdb)."""

from coreplane.sdk.fencing import FencedResource

__all__ = ["FencedResource"]
