/* Startup and board services for tinyops firmware on the MPS2 AN386 (Cortex-M4).
 *
 * A Cortex-M core boots by loading SP and PC from the first two words of its vector table
 * (at address 0 here), so the startup is plain C: the table below, and a reset handler
 * that copies .data from flash to RAM, zeroes .bss, runs main() and reports main's return
 * value as the emulator's exit status through semihosting. Faults end the run with exit
 * status 100, so a test sees a crash as a failure instead of a hang.
 */
#include "tinyops_board.h"

#include <stddef.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);

void tinyops_reset_handler(void);
void tinyops_fault_handler(void);

void tinyops_reset_handler(void) {
  uint32_t *src = &_sidata;
  uint32_t *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
  tinyops_sh_exit(main());
}

void tinyops_fault_handler(void) { tinyops_sh_exit(100); }

typedef void (*tinyops_vector)(void);

/* SP, reset, NMI, HardFault, MemManage, BusFault, UsageFault; the rest unused (no IRQs). */
__attribute__((section(".isr_vector"), used)) const tinyops_vector tinyops_vectors[16] = {
    (tinyops_vector)(uintptr_t)&_estack, tinyops_reset_handler, tinyops_fault_handler,
    tinyops_fault_handler, tinyops_fault_handler, tinyops_fault_handler, tinyops_fault_handler,
};

/* ---- semihosting ---- */

enum {
  SYS_OPEN = 0x01,
  SYS_CLOSE = 0x02,
  SYS_WRITE = 0x05,
  SYS_READ = 0x06,
  SYS_EXIT = 0x18,
  SYS_EXIT_EXTENDED = 0x20
};
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static int32_t semihost(int32_t op, const void *arg) {
  register int32_t r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static int32_t cstrlen(const char *s) {
  int32_t n = 0;
  while (s[n]) ++n;
  return n;
}

int32_t tinyops_sh_open(const char *path, int32_t mode) {
  const uint32_t args[3] = {(uint32_t)(uintptr_t)path, (uint32_t)mode, (uint32_t)cstrlen(path)};
  return semihost(SYS_OPEN, args);
}

int32_t tinyops_sh_read(int32_t handle, void *buf, int32_t len) {
  const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)len};
  return len - semihost(SYS_READ, args); /* the call returns the bytes NOT read */
}

int32_t tinyops_sh_write(int32_t handle, const void *buf, int32_t len) {
  const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, (uint32_t)len};
  return len - semihost(SYS_WRITE, args);
}

void tinyops_sh_close(int32_t handle) {
  const uint32_t args[1] = {(uint32_t)handle};
  (void)semihost(SYS_CLOSE, args);
}

void tinyops_sh_exit(int32_t code) {
  /* SYS_EXIT_EXTENDED carries a status; QEMU exits with it. */
  const uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
  (void)semihost(SYS_EXIT_EXTENDED, args);
  for (;;) {
  }
}

/* ---- CMSDK UART0 ---- */

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10))
#define UART_STATE_TX_FULL 1u
#define UART_STATE_RX_FULL 2u

void tinyops_uart_init(void) {
  UART_BAUDDIV = 16; /* the smallest legal divider; QEMU ignores the rate */
  UART_CTRL = 3;     /* TX and RX enabled */
}

void tinyops_uart_put(uint8_t byte) {
  while (UART_STATE & UART_STATE_TX_FULL) {
  }
  UART_DATA = byte;
}

uint8_t tinyops_uart_get(void) {
  while (!(UART_STATE & UART_STATE_RX_FULL)) {
  }
  return (uint8_t)UART_DATA;
}
