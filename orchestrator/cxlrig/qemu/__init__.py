"""cxlrig.qemu"""
