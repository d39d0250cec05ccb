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
	// On the new stack (clone3 set SP to its top): childMain(c). An
	// indirect call: the linker's nosplit check would count the child's
	// frames against the caller's stack, which the child does not use.
	SUBQ	$16, SP
	MOVQ	R12, 0(SP)
	MOVQ	$·childMain(SB), AX
	CALL	AX
	MOVL	$125, DI
	MOVL	$231, AX	// SYS_exit_group
	SYSCALL
	INT	$3
