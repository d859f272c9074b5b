"""AES-256-CBC encryption with PKCS#7 padding, in plain Python, for the fake's execution notices.

Why our own: the fake depends on the standard library and ``websockets`` only, and the client
decrypts with ``cryptography``. Two independent implementations meeting on the wire test the
client honestly (a shared bug cannot cancel itself out). Written from FIPS-197; checked against
its appendix C.3 vector in the tests. Speed does not matter here: notices are rare and short.
Encryption only: the fake never decrypts.
"""

from __future__ import annotations

__all__ = ["encrypt_cbc"]

_BLOCK = 16
_ROUNDS = 14  # AES-256
_KEY_WORDS = 8


def _gf_mul(a: int, b: int) -> int:
    """Multiply in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = ((a << 1) ^ 0x1B) & 0xFF if a & 0x80 else a << 1
        b >>= 1
    return product


def _build_sbox() -> bytes:
    """The S-box from its definition: multiplicative inverse, then the affine map (FIPS-197 5.1.1)."""
    inverse = [0] * 256
    for x in range(1, 256):
        for y in range(1, 256):
            if _gf_mul(x, y) == 1:
                inverse[x] = y
                break
    box = bytearray(256)
    for x in range(256):
        b = inverse[x]
        rotated = b
        value = b
        for _ in range(4):
            rotated = ((rotated << 1) | (rotated >> 7)) & 0xFF
            value ^= rotated
        box[x] = value ^ 0x63
    return bytes(box)


_SBOX = _build_sbox()


def _expand_key(key: bytes) -> list[bytes]:
    """The 15 round keys of AES-256 (FIPS-197 5.2), each 16 bytes in state order."""
    words = [list(key[4 * i : 4 * i + 4]) for i in range(_KEY_WORDS)]
    rcon = 1
    for i in range(_KEY_WORDS, 4 * (_ROUNDS + 1)):
        temp = list(words[i - 1])
        if i % _KEY_WORDS == 0:
            temp = [_SBOX[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= rcon
            rcon = _gf_mul(rcon, 2)
        elif i % _KEY_WORDS == 4:
            temp = [_SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - _KEY_WORDS], temp, strict=True)])
    return [bytes(b for word in words[4 * r : 4 * r + 4] for b in word) for r in range(_ROUNDS + 1)]


def _encrypt_block(block: bytes, round_keys: list[bytes]) -> bytes:
    """One block; the state is kept flat in input order (row r, column c at index r + 4c)."""
    state = [a ^ b for a, b in zip(block, round_keys[0], strict=True)]
    for round_index in range(1, _ROUNDS + 1):
        state = [_SBOX[b] for b in state]
        state = [state[r + 4 * ((c + r) % 4)] for c in range(4) for r in range(4)]
        if round_index != _ROUNDS:
            mixed: list[int] = []
            for c in range(4):
                a0, a1, a2, a3 = state[4 * c : 4 * c + 4]
                mixed += [
                    _gf_mul(a0, 2) ^ _gf_mul(a1, 3) ^ a2 ^ a3,
                    a0 ^ _gf_mul(a1, 2) ^ _gf_mul(a2, 3) ^ a3,
                    a0 ^ a1 ^ _gf_mul(a2, 2) ^ _gf_mul(a3, 3),
                    _gf_mul(a0, 3) ^ a1 ^ a2 ^ _gf_mul(a3, 2),
                ]
            state = mixed
        state = [a ^ b for a, b in zip(state, round_keys[round_index], strict=True)]
    return bytes(state)


def encrypt_block(block: bytes, key: bytes) -> bytes:
    """One raw AES-256 block (for the FIPS-197 vector test)."""
    if len(key) != 32 or len(block) != _BLOCK:
        raise ValueError("AES-256 takes a 32-byte key and a 16-byte block")
    return _encrypt_block(block, _expand_key(key))


def encrypt_cbc(plaintext: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-256-CBC of ``plaintext`` padded with PKCS#7, as KIS encrypts execution notices."""
    if len(key) != 32 or len(iv) != _BLOCK:
        raise ValueError("AES-256-CBC takes a 32-byte key and a 16-byte IV")
    round_keys = _expand_key(key)
    pad = _BLOCK - len(plaintext) % _BLOCK
    data = plaintext + bytes([pad]) * pad
    previous = iv
    out = bytearray()
    for start in range(0, len(data), _BLOCK):
        block = bytes(a ^ b for a, b in zip(data[start : start + _BLOCK], previous, strict=True))
        previous = _encrypt_block(block, round_keys)
        out += previous
    return bytes(out)
