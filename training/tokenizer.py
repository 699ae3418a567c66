"""A small CLIP tokenizer built in code (no download): byte-level BPE whose merges make the words of
edit instructions single tokens; any other word falls back to characters."""

from __future__ import annotations

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

WORDS = """raise lower lift bend straighten stretch bring lean step turn crouch stand move change take put
open close wash pick drop hold push pull grab pour cut stir walk sit jump kick wave clap reach touch
your the a an and to of in on into out up down around forward back side left right arm arms hand hands
leg legs knee knees foot feet head body pose above shoulder height over under plate cup bowl tap door
drawer fridge knife pan lid bread water tai chi drink""".split()
MAX_LENGTH = 32


def build_tokenizer(words: list[str] = WORDS, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    merges: list[tuple[str, str]] = []
    for w in dict.fromkeys(words):
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        cur = pieces[0]
        for nxt in pieces[1:]:
            if (cur, nxt) not in merges:
                merges.append((cur, nxt))
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
