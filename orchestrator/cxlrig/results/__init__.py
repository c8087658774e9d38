"""cxlrig.results"""
