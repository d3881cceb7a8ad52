"""The WKV operator (bidirectional and causal), its backends, and the extension loader."""

from .wkv import bi_wkv, causal_wkv, wkv_backend

__all__ = ["bi_wkv", "causal_wkv", "wkv_backend"]
