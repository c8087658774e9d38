"""cxlrig.build"""
