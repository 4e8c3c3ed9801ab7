// Package crc is CRC32-Castagnoli for image checksums, with Combine so
// that pieces of one file checksummed in parallel give the checksum of
// the whole.
package crc

import "hash/crc32"

// Table is the Castagnoli table (hardware accelerated where the CPU has
// SSE 4.2).
var Table = crc32.MakeTable(crc32.Castagnoli)

// Update returns the CRC of the bytes summed into c followed by b.
func Update(c uint32, b []byte) uint32 { return crc32.Update(c, Table, b) }

// castagnoliRev is the Castagnoli polynomial, bit-reversed (the
// representation crc32 works in: bit 31 is x^0).
const castagnoliRev = 0x82f63b78

// mulMod returns a*b modulo the polynomial, both in reversed form.
func mulMod(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		// b *= x
		if b&1 != 0 {
			b = b>>1 ^ castagnoliRev
		} else {
			b >>= 1
		}
	}
	return p
}

// xPow8n returns x^(8n) modulo the polynomial: the factor that shifts a
// CRC past n zero bytes.
func xPow8n(n uint64) uint32 {
	p := uint32(1) << 31  // x^0
	sq := uint32(1) << 30 // x^1, squared in turn into x^(2^k)
	// x^(8n) = x^(n<<3): walk the bits of 8n.
	for k, e := 0, n<<3; e != 0; k, e = k+1, e>>1 {
		if e&1 != 0 {
			p = mulMod(p, sq)
		}
		sq = mulMod(sq, sq)
	}
	return p
}

// Combine returns the CRC of A followed by B, given crcA = CRC(A),
// crcB = CRC(B) and lenB = len(B). The pre- and post-inversion of the
// standard CRC cancel out: CRC(A||B) = CRC(A)*x^(8*lenB) + CRC(B).
func Combine(crcA, crcB uint32, lenB uint64) uint32 {
	if lenB == 0 {
		return crcA
	}
	return mulMod(xPow8n(lenB), crcA) ^ crcB
}
