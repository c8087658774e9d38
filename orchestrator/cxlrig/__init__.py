"""cxlrig: describe a CXL machine in YAML, boot it in QEMU, measure what the kernel does."""

__version__ = "0.1.0"
