"""superblock"""
