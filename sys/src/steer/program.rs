//! The owner program in eBPF instructions, assembled at run time for a thread count.
//!
//! The program computes the owner of an IP packet exactly as the demux's
//! `datapath::owner_of` does for the packets it can parse: the 32-bit words of the source and
//! destination addresses xored together, xored with `source port ^ destination port` for TCP
//! and UDP (not for a later fragment, which carries no ports), multiplied by `0x9E37_79B1`,
//! shifted right by 16 and taken modulo the thread count. Everything it reads goes through the
//! classic packet loads (`LD_ABS`/`LD_IND`, network byte order, the program ends returning 0
//! if a load falls outside the packet), so the verifier needs no bounds checks. A packet it
//! cannot place (not IPv4 or IPv6) gets owner 0; IPv6 extension headers end the parse at the
//! addresses, so such a packet may reach a thread that hands it over, which is correct, only
//! slower.

/// The multiplier that spreads the folded tuple before the modulo (`2^32 / φ`).
pub const OWNER_MIX: u32 = 0x9E37_79B1;

/// One eBPF instruction, as `struct bpf_insn` lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Instruction classes, sizes, modes, operations and sources (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const IND: u8 = 0x40;
const ADD: u8 = 0x00;
const MUL: u8 = 0x20;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const EXIT: u8 = 0x90;
const K: u8 = 0x00;
const X: u8 = 0x08;

// Registers: r0 takes every load's result, r1 is the context on entry, r6 must hold it for the
// packet loads (which clobber r1–r5); r7 is the inner packet's offset, r8 the folded tuple,
// r9 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// A forward jump to a label, patched when the label is placed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    V4,
    V6,
    V4Ports,
    V6Ports,
    Ports,
    Finish,
}

#[derive(Default)]
struct Assembler {
    insns: Vec<Insn>,
    fixups: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Assembler {
    fn push(&mut self, i: Insn) {
        self.insns.push(i);
    }
    fn alu32_k(&mut self, op: u8, dst: u8, imm: u32) {
        self.push(insn(ALU | op | K, dst, 0, 0, imm as i32));
    }
    fn alu32_x(&mut self, op: u8, dst: u8, src: u8) {
        self.push(insn(ALU | op | X, dst, src, 0, 0));
    }
    fn mov64_x(&mut self, dst: u8, src: u8) {
        self.push(insn(ALU64 | MOV | X, dst, src, 0, 0));
    }
    /// r0 = the `size` bytes at r7 + `at`.
    fn load_inner(&mut self, size: u8, at: i32) {
        self.push(insn(LD | IND | size, 0, R7, 0, at));
    }
    fn jump_if(&mut self, op: u8, reg: u8, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.push(insn(JMP | op | K, reg, 0, 0, imm));
    }
    fn jump(&mut self, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.push(insn(JMP | JA, 0, 0, 0, 0));
    }
    fn exit(&mut self) {
        self.push(insn(JMP | EXIT, 0, 0, 0, 0));
    }
    /// r8 = the xor of the 32-bit words at r7 + each of `offsets`.
    fn fold_words(&mut self, offsets: &[i32]) {
        for (i, &at) in offsets.iter().enumerate() {
            self.load_inner(W, at);
            if i == 0 {
                self.mov64_x(R8, R0);
            } else {
                self.alu32_x(XOR, R8, R0);
            }
        }
    }
    /// Goes on to `ports` if the protocol byte at r7 + `at` is TCP or UDP, else to the finish.
    fn on_tcp_or_udp(&mut self, at: i32, ports: Label) {
        self.load_inner(B, at);
        self.jump_if(JEQ, R0, 6, ports);
        self.jump_if(JEQ, R0, 17, ports);
        self.jump(Label::Finish);
    }
    fn place(&mut self, label: Label) {
        self.labels.push((label, self.insns.len()));
    }
    fn finish(mut self) -> Vec<Insn> {
        for &(at, to) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|&(_, i)| i)
                .expect("every jump's label is placed");
            self.insns[at].off = i16::try_from(target as isize - at as isize - 1).expect("short program");
        }
        self.insns
    }
}

/// The owner program for `threads` threads (at least 1), for an IP packet at offset 0.
pub fn owner_program(threads: u32) -> Vec<Insn> {
    let mut a = Assembler::default();
    a.mov64_x(R6, R1);
    a.alu32_k(MOV, R7, 0);
    a.load_inner(B, 0);
    a.alu32_k(RSH, R0, 4);
    a.jump_if(JEQ, R0, 4, Label::V4);
    a.jump_if(JEQ, R0, 6, Label::V6);
    a.alu32_k(MOV, R0, 0);
    a.exit();

    a.place(Label::V4);
    a.fold_words(&[12, 16]);
    a.on_tcp_or_udp(9, Label::V4Ports);
    a.place(Label::V4Ports);
    a.load_inner(H, 6);
    a.alu32_k(AND, R0, 0x1fff);
    a.jump_if(JNE, R0, 0, Label::Finish);
    a.load_inner(B, 0);
    a.alu32_k(AND, R0, 0x0f);
    a.alu32_k(LSH, R0, 2);
    a.alu32_x(ADD, R7, R0);
    a.load_inner(W, 0);
    a.jump(Label::Ports);

    a.place(Label::V6);
    a.fold_words(&[8, 12, 16, 20, 24, 28, 32, 36]);
    a.on_tcp_or_udp(6, Label::V6Ports);
    a.place(Label::V6Ports);
    a.load_inner(W, 40);

    a.place(Label::Ports);
    a.mov64_x(R9, R0);
    a.alu32_k(RSH, R9, 16);
    a.alu32_k(AND, R0, 0xffff);
    a.alu32_x(XOR, R0, R9);
    a.alu32_x(XOR, R8, R0);

    a.place(Label::Finish);
    a.alu32_k(MUL, R8, OWNER_MIX);
    a.alu32_k(RSH, R8, 16);
    a.alu32_k(MOD, R8, threads.max(1));
    a.mov64_x(R0, R8);
    a.exit();
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program_and_it_ends_in_exit() {
        let program = owner_program(3);
        assert_eq!(program.last().map(|i| i.code), Some(JMP | EXIT));
        for (at, i) in program.iter().enumerate() {
            if i.code & 0x07 == JMP && i.code != JMP | EXIT {
                let target = at as isize + 1 + isize::from(i.off);
                assert!(
                    target > at as isize && (target as usize) < program.len(),
                    "jump at {at}"
                );
            }
        }
    }

    #[test]
    fn the_thread_count_is_the_modulus() {
        let program = owner_program(5);
        let modulo = program.iter().find(|i| i.code == ALU | MOD | K).expect("a modulo");
        assert_eq!(modulo.imm, 5);
        assert_eq!(owner_program(0), owner_program(1));
    }
}
