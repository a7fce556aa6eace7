"""The one place a kernel entry point turns `impl=` into an implementation (rules shared with the torch backend in
`hybridc_native.choice`: an explicit impl=, then HYBRIDC_KERNEL, then the entry point's auto)."""
from __future__ import annotations

from hybridc_native.choice import ENV, KNOWN, choose, forced, resolve

__all__ = ["ENV", "KNOWN", "choose", "forced", "resolve"]
