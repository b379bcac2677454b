"""land"""
