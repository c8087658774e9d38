"""cxlrig.machine"""
