"""ouro.data"""
