"""Pre-training the embedded default models from scratch (``itransfer pretrain``).

``config`` holds both recipes' settings; ``tokenizer`` and ``objectives`` the seq2seq recipe's
tokenizer and its span-corruption and prefix-LM objectives; ``seq2seq`` builds
``itransfer:tiny-t5`` (span corruption, then LM adaptation) and ``causal`` builds
``itransfer:tiny-llama`` on tiny-t5's tokenizer.
"""
