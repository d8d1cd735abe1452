"""ouro.io"""
