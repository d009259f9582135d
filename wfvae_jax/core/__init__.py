"""The model core: configuration, layers, Haar wavelets, encoder/decoder, posterior.

Nothing here reads files or knows about devices beyond the compile options of its jitted init.
"""
