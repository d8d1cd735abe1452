"""ouro.metrics"""
