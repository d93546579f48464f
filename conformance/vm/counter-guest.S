/*
 * The tiny guest of the QEMU VMM example (examples/qemu-vmm/): a bare-metal
 * multiboot program, no kernel, no libc. It counts in a CPU register and
 * stores the count in RAM on every step, so the count survives only if the
 * CPU state does: a guest started again begins at 0 and adds one to its boot
 * count. It prints the count on COM1 whenever the high word of the TSC
 * changes (about once a second), and never touches RAM outside its image,
 * its stack and the state block.
 *
 * State block at physical 3 MiB (examples/qemu-vmm/guest.ts reads it):
 *   +0  u32 magic "LUVM"
 *   +4  u32 count   (the counter, stored from %esi)
 *   +8  u32 boots   (incremented once at every start)
 *   +12 u32 ticks   (lines printed since this start)
 *
 * Built with `as --32` and `ld -m elf_i386 -Ttext 0x100000` (conformance/lib/vm/counter-guest.ts).
 */
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0
        .set COM1, 0x3f8
        .set STATE, 0x00300000
        .set STATE_MAGIC, 0x4d56554c    /* "LUVM" little-endian */

        .text
        .align 4
multiboot_header:               /* first in the image: the loader looks in the first 8 KiB */
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .globl _start
_start:
        cli
        mov $stack_top, %esp
        movl $STATE_MAGIC, STATE
        movl $0, STATE+4
        incl STATE+8
        movl $0, STATE+12
        mov $hello, %ebx
        call puts
        mov STATE+8, %eax
        call putu
        mov $newline, %ebx
        call puts
        xor %esi, %esi          /* the count: in a register, so only a resumed CPU continues it */
        rdtsc
        mov %edx, %edi          /* the TSC's high word when the last line was printed */
count:
        inc %esi
        mov %esi, STATE+4
        rdtsc
        cmp %edi, %edx
        je count
        mov %edx, %edi
        incl STATE+12
        mov $tick, %ebx
        call puts
        mov %esi, %eax
        call putu
        mov $newline, %ebx
        call puts
        jmp count

/* puts: the NUL-terminated string at %ebx to COM1. */
puts:
        movb (%ebx), %al
        test %al, %al
        jz 1f
        call putc
        inc %ebx
        jmp puts
1:      ret

/* putu: %eax in decimal to COM1. */
putu:
        mov $10, %ecx
        xor %ebp, %ebp          /* digits pushed */
1:      xor %edx, %edx
        div %ecx
        add $'0', %dl
        push %edx
        inc %ebp
        test %eax, %eax
        jnz 1b
2:      pop %eax
        call putc
        dec %ebp
        jnz 2b
        ret

/* putc: %al to COM1 once its transmitter is empty. */
putc:
        push %eax
        mov $COM1+5, %dx
1:      inb %dx, %al
        test $0x20, %al
        jz 1b
        pop %eax
        mov $COM1, %dx
        outb %al, %dx
        ret

hello:   .asciz "counter-guest: boot "
tick:    .asciz "count "
newline: .asciz "\r\n"

        .bss
        .align 16
        .space 4096
stack_top:
