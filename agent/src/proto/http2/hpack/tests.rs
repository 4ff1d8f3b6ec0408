//! Decoder tests: RFC 7541 Appendix C examples, Huffman round trips against a test-only encoder
//! built from the same code table, joined/desynchronised behaviour, malformed and random input.

use std::borrow::Cow;
use std::collections::HashMap;

use super::huffman::{self, CODES};
use super::{read_int, Decoder, Error, Field};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Octets from hex digits; whitespace ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digit pair")
        })
        .collect()
}

/// A decoded field, owned: `(name, value)`, `None` where unknown.
type Got = (Option<String>, Option<String>);

/// Dynamic-table entries, newest first: `(name, value)`, name `?` when unknown.
type Entries = Vec<(String, String)>;

/// What a block of an Appendix C sequence gives: fields, then the table and its size after it.
type Expected = (Vec<Got>, Entries, usize);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn owned(field: &Field<'_>) -> Got {
    match field {
        Field::Known { name, value } => (Some(text(name)), Some(text(value))),
        Field::Unknown { value } => (None, value.as_deref().map(text)),
    }
}

/// Decodes `block`, returning the reported fields and the result.
fn run(decoder: &mut Decoder, block: &[u8]) -> (Vec<Got>, Result<(), Error>) {
    let mut got = Vec::new();
    let result = decoder.decode(block, |field| got.push(owned(&field)));
    (got, result)
}

/// Decodes `block`, which must succeed.
fn ok(decoder: &mut Decoder, block: &[u8]) -> Vec<Got> {
    let (got, result) = run(decoder, block);
    assert_eq!(result, Ok(()), "fields so far: {got:?}");
    got
}

/// Expected known fields.
fn known(pairs: &[(&str, &str)]) -> Vec<Got> {
    pairs
        .iter()
        .map(|(n, v)| (Some((*n).to_owned()), Some((*v).to_owned())))
        .collect()
}

/// The tracked dynamic table, newest first (`?` for an unknown name), and its size.
fn table(decoder: &Decoder) -> (Entries, usize) {
    let entries = decoder
        .table
        .iter()
        .map(|e| {
            (
                e.name().map_or_else(|| "?".to_owned(), text),
                text(e.value()),
            )
        })
        .collect();
    (entries, decoder.table.size())
}

fn entries(pairs: &[(&str, &str)]) -> Entries {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// Test-only HPACK integer encoder (§5.1): `flags` are the bits above the `prefix`.
fn put_int(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).expect("fits the prefix"));
        return;
    }
    out.push(flags | u8::try_from(max).expect("prefix mask"));
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | u8::try_from(rest & 0x7f).expect("7 bits"));
        rest >>= 7;
    }
    out.push(u8::try_from(rest).expect("7 bits"));
}

/// Test-only Huffman encoder (§5.2) from the same [`CODES`], padded with the EOS prefix.
fn huff_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &byte in data {
        let (code, len) = CODES.get(usize::from(byte)).copied().expect("symbol");
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("octet"));
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(u8::try_from(((acc << pad) | ((1u64 << pad) - 1)) & 0xff).expect("octet"));
    }
    out
}

/// Test-only string literal encoder (§5.2).
fn put_str(out: &mut Vec<u8>, data: &[u8], huffman: bool) {
    if huffman {
        let coded = huff_encode(data);
        put_int(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        put_int(out, 0, 7, data.len());
        out.extend_from_slice(data);
    }
}

/// Reference Huffman decoder: one bit at a time against a `(length, code) -> symbol` map.
fn reference_huff_decode(src: &[u8]) -> Result<Vec<u8>, Error> {
    let map: HashMap<(u8, u32), usize> = CODES
        .iter()
        .enumerate()
        .map(|(sym, &(code, len))| ((len, code), sym))
        .collect();
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if let Some(&sym) = map.get(&(len, code)) {
                out.push(u8::try_from(sym).map_err(|_| Error::BadHuffman)?);
                (code, len) = (0, 0);
            } else if len > 30 {
                return Err(Error::BadHuffman);
            }
        }
    }
    if len <= 7 && code == (1u32 << len) - 1 {
        Ok(out)
    } else {
        Err(Error::BadHuffman)
    }
}

/// xorshift64: deterministic pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).expect("fits")).expect("fits")
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes().first().copied().unwrap_or(0)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Huffman (§5.2, Appendix B)

#[test]
fn huffman_table_is_a_complete_canonical_code() {
    // Kraft sum exactly 1: every bit string is a code or a prefix of one.
    let kraft: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
    assert_eq!(kraft, 1 << 30);
    // Canonical: ordered by (length, symbol), each code the successor of the previous one.
    let mut order: Vec<(u8, usize, u32)> = CODES
        .iter()
        .enumerate()
        .map(|(sym, &(code, len))| (len, sym, code))
        .collect();
    order.sort_unstable();
    let mut expected = 0u32;
    let mut prev_len = order.first().map_or(0, |o| o.0);
    for (len, sym, code) in order {
        expected <<= len - prev_len;
        prev_len = len;
        assert_eq!(code, expected, "symbol {sym}");
        expected += 1;
    }
    // Spot checks against RFC 7541 Appendix B.
    assert_eq!(CODES.first(), Some(&(0x1ff8, 13)));
    assert_eq!(CODES.get(usize::from(b' ')), Some(&(0x14, 6)));
    assert_eq!(CODES.get(usize::from(b'0')), Some(&(0x0, 5)));
    assert_eq!(CODES.get(usize::from(b'a')), Some(&(0x3, 5)));
    assert_eq!(CODES.get(usize::from(b'~')), Some(&(0x1ffd, 13)));
    assert_eq!(CODES.get(255), Some(&(0x3ffffee, 26)));
    assert_eq!(CODES.get(256), Some(&(0x3fffffff, 30)));
}

#[test]
fn huffman_every_symbol_round_trips() {
    for sym in 0..=255u8 {
        for input in [vec![sym], vec![b'a', sym, b'z'], vec![sym; 7]] {
            let coded = huff_encode(&input);
            assert_eq!(huffman::decode(&coded), Ok(input.clone()), "symbol {sym}");
        }
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(huffman::decode(&huff_encode(&all)), Ok(all.clone()));
    let reversed: Vec<u8> = all.iter().rev().copied().collect();
    assert_eq!(huffman::decode(&huff_encode(&reversed)), Ok(reversed));
    assert_eq!(huffman::decode(&[]), Ok(Vec::new()));
}

#[test]
fn huffman_rfc_strings() {
    // Strings of Appendix C.4 and C.6.
    let cases: [(&str, &str); 6] = [
        ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
        ("a8eb 1064 9cbf", "no-cache"),
        ("25a8 49e9 5ba9 7d7f", "custom-key"),
        ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
        ("6402", "302"),
        ("aec3 771a 4b", "private"),
    ];
    for (coded, plain) in cases {
        assert_eq!(huffman::decode(&hex(coded)), Ok(plain.as_bytes().to_vec()));
        assert_eq!(huff_encode(plain.as_bytes()), hex(coded));
    }
}

#[test]
fn huffman_padding_errors() {
    // 'a' = 00011, then padding.
    assert_eq!(huffman::decode(&[0b0001_1111]), Ok(b"a".to_vec()));
    // Padding not all ones (000 is a prefix of '0').
    assert_eq!(huffman::decode(&[0b0001_1000]), Err(Error::BadHuffman));
    assert_eq!(huffman::decode(&[0b0001_1110]), Err(Error::BadHuffman));
    // Padding of 8 bits and more, all ones.
    assert_eq!(huffman::decode(&[0xff]), Err(Error::BadHuffman));
    assert_eq!(
        huffman::decode(&[0b0001_1111, 0xff]),
        Err(Error::BadHuffman)
    );
    // 'a' 'a' = 00011 00011 + 6 bits of padding.
    assert_eq!(huff_encode(b"aa"), vec![0b0001_1000, 0b1111_1111]);
    assert_eq!(
        huffman::decode(&[0b0001_1000, 0b1111_1111]),
        Ok(b"aa".to_vec())
    );
    // Five '0' (00000) = 25 bits + 7 bits of padding: the longest valid padding.
    assert_eq!(huffman::decode(&[0, 0, 0, 0x7f]), Ok(b"00000".to_vec()));
    assert_eq!(huffman::decode(&[0, 0, 0, 0x7e]), Err(Error::BadHuffman));
    // "0000" "1" (00001), then 111110: not all ones.
    assert_eq!(huffman::decode(&[0, 0, 0, 0xfe]), Err(Error::BadHuffman));
    assert_eq!(
        reference_huff_decode(&[0, 0, 0, 0xfe]),
        Err(Error::BadHuffman)
    );
    // But 0x3f is "00000" x5 then '9' (011111) and one bit of padding.
    assert_eq!(huffman::decode(&[0, 0, 0, 0x3f]), Ok(b"000009".to_vec()));
    // EOS (30 ones) inside a string, padded.
    assert_eq!(
        huffman::decode(&[0xff, 0xff, 0xff, 0xff]),
        Err(Error::BadHuffman)
    );
    // EOS followed by 'a' (00011) and 5 bits of padding.
    assert_eq!(
        huffman::decode(&[0xff, 0xff, 0xff, 0xfc, 0x7f]),
        Err(Error::BadHuffman)
    );
    assert_eq!(
        reference_huff_decode(&[0xff, 0xff, 0xff, 0xfc, 0x7f]),
        Err(Error::BadHuffman)
    );
    // A symbol cut short: the first 8 bits of a 10-bit code ('!' = 1111111000).
    assert_eq!(huffman::decode(&[0b1111_1110]), Err(Error::BadHuffman));
}

#[test]
fn huffman_matches_bitwise_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let input = if round % 2 == 0 {
            // Random octets: mostly invalid.
            let len = rng.below(12);
            rng.bytes(len)
        } else {
            // A valid encoding, possibly damaged at its end.
            let len = rng.below(20);
            let plain = rng.bytes(len);
            let mut coded = huff_encode(&plain);
            if let Some(last) = coded.last_mut() {
                match rng.below(4) {
                    0 => *last ^= 1 << rng.below(8),
                    1 => coded.push(0xff),
                    _ => {}
                }
            }
            coded
        };
        assert_eq!(
            huffman::decode(&input),
            reference_huff_decode(&input),
            "input {input:02x?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Integers (§5.1, Appendix C.1)

#[test]
fn integers_c1() {
    let mut rest: &[u8] = &[0b1110_1010]; // C.1.1: 10 on a 5-bit prefix (flags 111).
    assert_eq!(read_int(&mut rest, 5), Ok(10));
    assert!(rest.is_empty());
    let block = [0x1f, 0x9a, 0x0a, 0x55]; // C.1.2: 1337 on a 5-bit prefix.
    let mut rest: &[u8] = &block;
    assert_eq!(read_int(&mut rest, 5), Ok(1337));
    assert_eq!(rest, &[0x55]);
    let mut rest: &[u8] = &[0x2a]; // C.1.3: 42 on an 8-bit prefix.
    assert_eq!(read_int(&mut rest, 8), Ok(42));
}

#[test]
fn integer_limits() {
    for value in [0, 30, 31, 127, 128, 4096, 1 << 20, 0xffff_ffff] {
        let mut out = Vec::new();
        put_int(&mut out, 0, 5, value);
        let mut rest: &[u8] = &out;
        assert_eq!(read_int(&mut rest, 5), Ok(value), "{value}");
    }
    // 2^32 = 31 + (2^32 - 31).
    let mut out = Vec::new();
    put_int(&mut out, 0, 5, 1 << 32);
    assert_eq!(read_int(&mut out.as_slice(), 5), Err(Error::BadInteger));
    // Endless continuation: error, not overflow.
    assert_eq!(
        read_int(
            &mut [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]
                .as_slice(),
            5
        ),
        Err(Error::BadInteger)
    );
    assert_eq!(
        read_int(&mut [0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f].as_slice(), 5),
        Err(Error::BadInteger)
    );
    // Leading zero groups are tolerated up to 63 bits.
    assert_eq!(
        read_int(&mut [0x1f, 0x81, 0x80, 0x00].as_slice(), 5),
        Ok(32)
    );
    // Truncated.
    assert_eq!(read_int(&mut [].as_slice(), 5), Err(Error::Truncated));
    assert_eq!(read_int(&mut [0x1f].as_slice(), 5), Err(Error::Truncated));
    assert_eq!(
        read_int(&mut [0x1f, 0x9a].as_slice(), 5),
        Err(Error::Truncated)
    );
    // A decoder block with a huge index.
    let mut d = Decoder::new();
    assert_eq!(
        run(&mut d, &hex("ff ff ff ff ff 7f")).1,
        Err(Error::BadInteger)
    );
}

// ---------------------------------------------------------------------------------------------
// Appendix C.2: header field representations

#[test]
fn c2_1_literal_with_indexing() {
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    let mut d = Decoder::new();
    let mut fields = Vec::new();
    d.decode(&block, |f| fields.push(f)).expect("valid");
    // Raw literals are borrowed from the block.
    assert!(matches!(
        fields.as_slice(),
        [Field::Known {
            name: Cow::Borrowed(b"custom-key"),
            value: Cow::Borrowed(b"custom-header")
        }]
    ));
    assert_eq!(table(&d), (entries(&[("custom-key", "custom-header")]), 55));
}

#[test]
fn c2_2_literal_without_indexing() {
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    let mut d = Decoder::new();
    assert_eq!(ok(&mut d, &block), known(&[(":path", "/sample/path")]));
    assert_eq!(table(&d), (vec![], 0));
}

#[test]
fn c2_3_literal_never_indexed() {
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    let mut d = Decoder::new();
    assert_eq!(ok(&mut d, &block), known(&[("password", "secret")]));
    assert_eq!(table(&d), (vec![], 0));
}

#[test]
fn c2_4_indexed() {
    let mut d = Decoder::new();
    let mut fields = Vec::new();
    d.decode(&[0x82], |f| fields.push(f)).expect("valid");
    assert!(matches!(
        fields.as_slice(),
        [Field::Known {
            name: Cow::Borrowed(b":method"),
            value: Cow::Borrowed(b"GET")
        }]
    ));
    assert_eq!(table(&d), (vec![], 0));
}

// ---------------------------------------------------------------------------------------------
// Appendix C.3 / C.4: requests, without and with Huffman coding

/// `(fields, table after, size after)` of C.3.n / C.4.n.
fn request_expectations() -> [Expected; 3] {
    [
        (
            known(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
            entries(&[(":authority", "www.example.com")]),
            57,
        ),
        (
            known(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
            entries(&[
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ]),
            110,
        ),
        (
            known(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
            entries(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache"),
                (":authority", "www.example.com"),
            ]),
            164,
        ),
    ]
}

const C3: [&str; 3] = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
];

const C4: [&str; 3] = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
];

fn check_sequence(blocks: &[&str], expectations: &[Expected], max_table_size: usize) {
    assert_eq!(blocks.len(), expectations.len());
    let mut d = Decoder::new();
    d.set_max_table_size(max_table_size);
    for (n, (block, (fields, table_after, size))) in blocks.iter().zip(expectations).enumerate() {
        assert_eq!(&ok(&mut d, &hex(block)), fields, "block {n}");
        assert_eq!(&table(&d), &(table_after.clone(), *size), "block {n}");
        assert!(!d.is_joined());
        assert_eq!(d.known_entries(), table_after.len());
    }
}

#[test]
fn c3_requests_without_huffman() {
    check_sequence(&C3, &request_expectations(), 4096);
}

#[test]
fn c4_requests_with_huffman() {
    check_sequence(&C4, &request_expectations(), 4096);
}

// ---------------------------------------------------------------------------------------------
// Appendix C.5 / C.6: responses, table size 256, evictions

const DATE_21: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE_22: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

fn response_expectations() -> [Expected; 3] {
    [
        (
            known(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", DATE_21),
                ("location", LOCATION),
            ]),
            entries(&[
                ("location", LOCATION),
                ("date", DATE_21),
                ("cache-control", "private"),
                (":status", "302"),
            ]),
            222,
        ),
        (
            known(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", DATE_21),
                ("location", LOCATION),
            ]),
            entries(&[
                (":status", "307"),
                ("location", LOCATION),
                ("date", DATE_21),
                ("cache-control", "private"),
            ]),
            222,
        ),
        (
            known(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", DATE_22),
                ("location", LOCATION),
                ("content-encoding", "gzip"),
                ("set-cookie", COOKIE),
            ]),
            entries(&[
                ("set-cookie", COOKIE),
                ("content-encoding", "gzip"),
                ("date", DATE_22),
            ]),
            215,
        ),
    ]
}

const C5: [&str; 3] = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
     6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
     3d31",
];

const C6: [&str; 3] = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
     9587 3160 65c0 03ed 4ee5 b106 3d50 07",
];

#[test]
fn c5_responses_without_huffman() {
    check_sequence(&C5, &response_expectations(), 256);
}

#[test]
fn c6_responses_with_huffman() {
    check_sequence(&C6, &response_expectations(), 256);
}

// ---------------------------------------------------------------------------------------------
// Joined mid-stream / desynchronised

/// Literal with incremental indexing and a literal name.
fn insert_block(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    put_str(&mut out, name.as_bytes(), false);
    put_str(&mut out, value.as_bytes(), true);
    out
}

#[test]
fn joined_unknown_then_known() {
    let mut d = Decoder::joined();
    assert!(d.is_joined());
    assert_eq!(ok(&mut d, &[0xbe]), vec![(None, None)]);
    assert_eq!(
        ok(&mut d, &insert_block("custom-key", "custom-value")),
        known(&[("custom-key", "custom-value")])
    );
    assert_eq!(d.known_entries(), 1);
    assert_eq!(
        ok(&mut d, &[0x82, 0xbe, 0xbf]),
        vec![
            (Some(":method".into()), Some("GET".into())),
            (Some("custom-key".into()), Some("custom-value".into())),
            (None, None),
        ]
    );
    assert!(d.is_joined());
}

#[test]
fn joined_literal_with_unknown_indexed_name() {
    let mut d = Decoder::joined();
    // §6.2.1 with name index 62 (unknown): the value is reported and the entry tracked.
    let mut block = Vec::new();
    put_int(&mut block, 0x40, 6, 62);
    put_str(&mut block, b"abc", false);
    // §6.2.2 and §6.2.3 with name index 63 (now the same unknown entry, shifted by one).
    put_int(&mut block, 0x00, 4, 63);
    put_str(&mut block, b"def", true);
    put_int(&mut block, 0x10, 4, 63);
    put_str(&mut block, b"ghi", false);
    assert_eq!(
        ok(&mut d, &block),
        vec![
            (None, Some("abc".into())),
            (None, Some("def".into())),
            (None, Some("ghi".into())),
        ]
    );
    assert_eq!(table(&d), (entries(&[("?", "abc")]), 35));
    // Indexed: the tracked entry gives its value, the older one nothing.
    assert_eq!(
        ok(&mut d, &[0xbe, 0xbf]),
        vec![(None, Some("abc".into())), (None, None)]
    );
    // A literal naming the half-known entry: value only again.
    let mut block = Vec::new();
    put_int(&mut block, 0x40, 6, 62);
    put_str(&mut block, b"xyz", false);
    assert_eq!(ok(&mut d, &block), vec![(None, Some("xyz".into()))]);
    assert_eq!(table(&d), (entries(&[("?", "xyz"), ("?", "abc")]), 70));
}

#[test]
fn joined_eviction_keeps_newest_known_entries() {
    let mut d = Decoder::joined();
    d.set_max_table_size(100);
    ok(&mut d, &insert_block("a", "1")); // 34 octets
    ok(&mut d, &insert_block("b", "2")); // 68
                                         // 62 = b, 63 = a, 64: room for one more 32-octet entry (100 - 68 = 32): unknown.
    assert_eq!(
        ok(&mut d, &[0xbe, 0xbf, 0xc0]),
        vec![
            (Some("b".into()), Some("2".into())),
            (Some("a".into()), Some("1".into())),
            (None, None),
        ]
    );
    // 65: cannot exist.
    assert_eq!(run(&mut d, &[0xc1]).1, Err(Error::BadIndex));
    assert_eq!(d.known_entries(), 0);
    ok(&mut d, &insert_block("a", "1"));
    ok(&mut d, &insert_block("b", "2"));
    ok(&mut d, &insert_block("c", "3")); // 102 > 100: "a" goes.
    assert_eq!(table(&d), (entries(&[("c", "3"), ("b", "2")]), 68));
    // An entry larger than the table empties it (§4.4).
    ok(&mut d, &insert_block("long", &"x".repeat(80)));
    assert_eq!(table(&d), (vec![], 0));
    assert!(d.is_joined());
}

#[test]
fn size_update_to_zero_resyncs() {
    let mut d = Decoder::joined();
    ok(&mut d, &insert_block("k", "v"));
    assert_eq!(ok(&mut d, &[0x20]), vec![]);
    assert!(!d.is_joined());
    assert_eq!(d.known_entries(), 0);
    // Synchronised and empty: a dynamic index is an error again... (table max is 0 now)
    assert_eq!(run(&mut d, &[0xbe]).1, Err(Error::BadIndex));
    assert!(d.is_joined());

    // Size update to 0 then back to 4096 in one block (§4.2), then tracked from scratch.
    let mut d = Decoder::joined();
    let mut block = vec![0x20];
    put_int(&mut block, 0x20, 5, 4096);
    block.extend(insert_block("k", "v"));
    block.push(0xbe);
    assert_eq!(ok(&mut d, &block), known(&[("k", "v"), ("k", "v")]));
    assert!(!d.is_joined());
    assert_eq!(run(&mut d, &[0xbf]).1, Err(Error::BadIndex));
}

#[test]
fn size_update_nonzero_keeps_joined_and_evicts() {
    let mut d = Decoder::joined();
    ok(&mut d, &insert_block("a", "1"));
    ok(&mut d, &insert_block("b", "2"));
    let mut block = Vec::new();
    put_int(&mut block, 0x20, 5, 40);
    block.push(0xbe);
    block.push(0xbf); // 63: "a" was evicted; 40 - 34 = 6 octets cannot hold an older entry.
    assert_eq!(
        run(&mut d, &block),
        (known(&[("b", "2")]), Err(Error::BadIndex))
    );
    assert!(d.is_joined());
}

#[test]
fn size_update_errors() {
    // Above the SETTINGS limit.
    let mut d = Decoder::new();
    let mut block = Vec::new();
    put_int(&mut block, 0x20, 5, 4097);
    assert_eq!(run(&mut d, &block).1, Err(Error::BadSizeUpdate));
    assert!(d.is_joined());
    // Accepted once the limit is raised.
    let mut d = Decoder::new();
    d.set_max_table_size(65_536);
    assert_eq!(run(&mut d, &block).1, Ok(()));
    // Not at the start of the block.
    let mut d = Decoder::new();
    assert_eq!(
        run(&mut d, &[0x82, 0x20]),
        (known(&[(":method", "GET")]), Err(Error::BadSizeUpdate))
    );
}

#[test]
fn index_errors() {
    let mut d = Decoder::new();
    assert_eq!(run(&mut d, &[0x80]).1, Err(Error::BadIndex)); // index 0
    let mut d = Decoder::new();
    assert_eq!(run(&mut d, &[0xbe]).1, Err(Error::BadIndex)); // empty dynamic table
    let mut d = Decoder::new();
    assert_eq!(run(&mut d, &[0x7e, 0x01, 0x61]).1, Err(Error::BadIndex)); // literal name 62
    assert_eq!(
        ok(&mut Decoder::new(), &[0xbd]),
        known(&[("www-authenticate", "")])
    ); // 61
       // Joined, but past what 4096 octets can hold (128 entries of 32 octets).
    let mut d = Decoder::joined();
    let mut block = Vec::new();
    put_int(&mut block, 0x80, 7, 61 + 128);
    assert_eq!(ok(&mut d, &block), vec![(None, None)]);
    let mut block = Vec::new();
    put_int(&mut block, 0x80, 7, 61 + 129);
    assert_eq!(run(&mut d, &block).1, Err(Error::BadIndex));
}

#[test]
fn error_desynchronises() {
    let mut d = Decoder::new();
    ok(&mut d, &insert_block("k", "v"));
    assert_eq!(d.known_entries(), 1);
    // A field, then a string with invalid Huffman padding.
    let (got, result) = run(&mut d, &[0xbe, 0x00, 0x01, 0x61, 0x81, 0x00]);
    assert_eq!(got, known(&[("k", "v")]));
    assert_eq!(result, Err(Error::BadHuffman));
    assert!(d.is_joined());
    assert_eq!(d.known_entries(), 0);
    // Entries are tracked again from the next block.
    ok(&mut d, &insert_block("n", "w"));
    assert_eq!(
        ok(&mut d, &[0xbe, 0xbf]),
        vec![(Some("n".into()), Some("w".into())), (None, None)]
    );
    // lose_sync does the same.
    d.lose_sync();
    assert_eq!(d.known_entries(), 0);
    assert_eq!(ok(&mut d, &[0xbe]), vec![(None, None)]);
}

#[test]
fn set_max_table_size_evicts() {
    let mut d = Decoder::new();
    for block in C3 {
        ok(&mut d, &hex(block));
    }
    assert_eq!(d.known_entries(), 3);
    d.set_max_table_size(120); // 164 -> 110: the oldest (":authority", 57 octets) goes.
    assert_eq!(
        table(&d),
        (
            entries(&[
                ("custom-key", "custom-value"),
                ("cache-control", "no-cache")
            ]),
            107
        )
    );
    assert_eq!(run(&mut d, &[0xc0]).1, Err(Error::BadIndex));
}

// ---------------------------------------------------------------------------------------------
// Malformed input

#[test]
fn truncated_blocks_at_every_offset() {
    let sequences = [
        (C3, request_expectations(), 4096),
        (C4, request_expectations(), 4096),
        (C5, response_expectations(), 256),
        (C6, response_expectations(), 256),
    ];
    for (blocks, expectations, max_table_size) in sequences {
        let blocks = blocks.map(hex);
        for (n, (block, (expected, _, _))) in blocks.iter().zip(&expectations).enumerate() {
            for cut in 0..block.len() {
                // A decoder in the state the block expects.
                let mut d = Decoder::new();
                d.set_max_table_size(max_table_size);
                for earlier in blocks.iter().take(n) {
                    ok(&mut d, earlier);
                }
                let (got, result) = run(&mut d, block.get(..cut).expect("in range"));
                assert!(
                    matches!(result, Ok(()) | Err(Error::Truncated)),
                    "block {n} cut at {cut}: {result:?}"
                );
                assert!(got.len() < expected.len(), "block {n} cut at {cut}");
                assert_eq!(got.as_slice(), expected.get(..got.len()).expect("prefix"));
            }
        }
    }
}

#[test]
fn c4_1_truncated_at_every_offset() {
    let block = hex(C4.first().expect("C.4.1"));
    for cut in 0..block.len() {
        let (got, result) = run(&mut Decoder::new(), block.get(..cut).expect("in range"));
        assert!(
            matches!(result, Ok(()) | Err(Error::Truncated)),
            "cut at {cut}: {result:?}"
        );
        assert!(got.len() < 4);
    }
    // The string of :authority is cut: truncated, three fields reported.
    let (got, result) = run(&mut Decoder::new(), block.get(..10).expect("in range"));
    assert_eq!((got.len(), result), (3, Err(Error::Truncated)));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut synced = Decoder::new();
    let mut joined = Decoder::joined();
    for _ in 0..10_000 {
        let len = rng.below(64);
        let block = rng.bytes(len);
        for d in [&mut synced, &mut joined] {
            let mut count = 0usize;
            let _ = d.decode(&block, |_| count += 1);
            assert!(count <= block.len());
            assert!(d.table.size() <= d.table.max_size());
        }
        let mut fresh = Decoder::joined();
        let _ = fresh.decode(&block, |_| {});
    }
}

#[test]
fn mutated_rfc_blocks_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let all: Vec<Vec<u8>> = C3
        .iter()
        .chain(&C4)
        .chain(&C5)
        .chain(&C6)
        .copied()
        .map(hex)
        .collect();
    let mut d = Decoder::joined();
    for _ in 0..20_000 {
        let mut block = all.get(rng.below(all.len())).cloned().unwrap_or_default();
        for _ in 0..=rng.below(3) {
            let i = rng.below(block.len());
            if let Some(b) = block.get_mut(i) {
                *b ^= rng.byte();
            }
        }
        if rng.below(8) == 0 {
            d.set_max_table_size(rng.below(5000));
        }
        let _ = d.decode(&block, |_| {});
        assert!(d.table.size() <= d.table.max_size());
    }
}
