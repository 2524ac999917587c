"""engine/levels"""
