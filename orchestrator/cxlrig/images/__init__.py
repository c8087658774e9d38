"""Guest images built from source: the kernel variants, the initramfs and the
guest programs, each cached by the hash of what went into it (``cache``)."""
