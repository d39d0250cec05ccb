#include "textflag.h"

// func cloneVM(args *cloneArgs, size uintptr, c *childArgs) (pid uintptr, errno uintptr)
//
// clone3 with the caller's arguments; the child starts on the stack that
// args names and calls childMain(c), which never returns.
TEXT ·cloneVM(SB),NOSPLIT,$0-40
	MOVQ	args+0(FP), DI
	MOVQ	size+8(FP), SI
	MOVQ	c+16(FP), R12
	MOVQ	$435, AX	// SYS_clone3
	SYSCALL
	CMPQ	AX, $0
	JEQ	child
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$0, pid+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	RET
ok:
	MOVQ	AX, pid+24(FP)
	MOVQ	$0, errno+32(FP)
	RET
child:
	// On the new stack (clone3 set SP to its top): childMain(c), called
	// at its ABIInternal entry (c.entry) with c in AX, X15 zero as that
	// ABI wants, and no goroutine in R14 (the child has none; childMain
	// and what it calls never look). Not through the ABI0 wrapper, which
	// a race build has call the race detector. An indirect call: the
	// linker's nosplit check would count the child's frames against the
	// caller's stack, which the child does not use.
	SUBQ	$16, SP
	MOVQ	R12, AX
	MOVQ	32(R12), DX	// c.entry
	XORPS	X15, X15
	XORQ	R14, R14
	CALL	DX
	MOVL	$125, DI
	MOVL	$231, AX	// SYS_exit_group
	SYSCALL
	INT	$3
