"""cxlrig.scenario"""
