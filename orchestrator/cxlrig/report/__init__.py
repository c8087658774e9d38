"""cxlrig.report"""
