/* The emulated board's services for tinyops firmware: Arm semihosting (host files, exit)
 * and the CMSDK UART of the MPS2 boards. See docs/compiler.md, "Emulated Cortex-M4". */
#ifndef TINYOPS_BOARD_H_
#define TINYOPS_BOARD_H_

#include <stdint.h>

/* Semihosting (bkpt 0xab): QEMU with -semihosting-config enable=on,target=native serves
 * these from the host; a debugger (OpenOCD, pyOCD) does the same on a real board. */
int32_t tinyops_sh_open(const char *path, int32_t mode); /* mode 1 = "rb", 5 = "wb" */
int32_t tinyops_sh_read(int32_t handle, void *buf, int32_t len);        /* bytes read */
int32_t tinyops_sh_write(int32_t handle, const void *buf, int32_t len); /* bytes written */
void tinyops_sh_close(int32_t handle);
void tinyops_sh_exit(int32_t code); /* ends the emulation with this exit status */

/* CMSDK UART0 (0x40004000): blocking byte I/O, as QEMU's -serial connects it. */
void tinyops_uart_init(void);
void tinyops_uart_put(uint8_t byte);
uint8_t tinyops_uart_get(void);

#endif /* TINYOPS_BOARD_H_ */
