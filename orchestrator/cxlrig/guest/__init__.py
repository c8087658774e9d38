"""cxlrig.guest"""
