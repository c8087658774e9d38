"""cxlrig.plugin"""
