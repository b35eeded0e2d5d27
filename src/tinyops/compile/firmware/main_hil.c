/* Hardware-in-the-loop firmware: the framed serial protocol of tinyops.compile.hil on UART0.
 *
 * Frame (both directions): 0x7E, type (1 byte), payload length (uint32 LE), payload,
 * CRC-32 (IEEE, as zlib.crc32, uint32 LE) over type, length and payload.
 *
 *   host 'I' (empty)        -> 'i': input size, output size, arena size (uint32 LE each)
 *   host 'R' (INPUT_SIZE B) -> 'r': status (int32), cycles (uint32), the output bytes
 *   host 'Q' (empty)        -> 'q' (empty), then the firmware exits (status 0)
 *   anything malformed      -> 'e': error code (1 bad CRC, 2 bad length, 3 unknown type)
 *
 * Cycles come from the DWT cycle counter when the core has one (DWT_CTRL.NOCYCCNT clear
 * and the counter runs); otherwise (QEMU does not model it) they are reported as 0 and the
 * host uses the instruction count from tinyops.compile.icount instead.
 */
#include <stddef.h>

#include "tinyops_board.h"
#include "tinyops_model.h"

#define FRAME_START 0x7Eu
#define MAX_PAYLOAD (TINYOPS_MODEL_INPUT_SIZE + TINYOPS_MODEL_OUTPUT_SIZE + 16)

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)

int8_t tinyops_input[TINYOPS_MODEL_INPUT_SIZE] __attribute__((aligned(16)));
int8_t tinyops_output[TINYOPS_MODEL_OUTPUT_SIZE] __attribute__((aligned(16)));
static uint8_t payload[MAX_PAYLOAD];

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, uint32_t n) {
  uint32_t i;
  int k;
  for (i = 0; i < n; ++i) {
    crc ^= p[i];
    for (k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc;
}

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void send_frame(uint8_t type, const uint8_t *data, uint32_t len) {
  uint8_t head[5];
  uint8_t tail[4];
  uint32_t crc, i;
  head[0] = type;
  put_u32(head + 1, len);
  crc = crc32_update(0xFFFFFFFFu, head, 5);
  crc = crc32_update(crc, data, len) ^ 0xFFFFFFFFu;
  put_u32(tail, crc);
  tinyops_uart_put(FRAME_START);
  for (i = 0; i < 5; ++i) tinyops_uart_put(head[i]);
  for (i = 0; i < len; ++i) tinyops_uart_put(data[i]);
  for (i = 0; i < 4; ++i) tinyops_uart_put(tail[i]);
}

static void send_error(uint8_t code) { send_frame('e', &code, 1); }

static int cycle_counter_start(void) {
  DEMCR |= 1u << 24; /* TRCENA */
  if (DWT_CTRL & (1u << 25)) return 0; /* NOCYCCNT */
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;
  return 1;
}

int main(void) {
  tinyops_uart_init();
  for (;;) {
    uint8_t head[5];
    uint8_t tail[4];
    uint32_t len, i, crc;
    while (tinyops_uart_get() != FRAME_START) {
    }
    for (i = 0; i < 5; ++i) head[i] = tinyops_uart_get();
    len = get_u32(head + 1);
    if (len > MAX_PAYLOAD) {
      send_error(2);
      continue;
    }
    for (i = 0; i < len; ++i) payload[i] = tinyops_uart_get();
    for (i = 0; i < 4; ++i) tail[i] = tinyops_uart_get();
    crc = crc32_update(crc32_update(0xFFFFFFFFu, head, 5), payload, len) ^ 0xFFFFFFFFu;
    if (crc != get_u32(tail)) {
      send_error(1);
      continue;
    }
    if (head[0] == 'I' && len == 0) {
      uint8_t info[12];
      put_u32(info, TINYOPS_MODEL_INPUT_SIZE);
      put_u32(info + 4, TINYOPS_MODEL_OUTPUT_SIZE);
      put_u32(info + 8, TINYOPS_MODEL_ARENA_SIZE);
      send_frame('i', info, sizeof info);
    } else if (head[0] == 'R') {
      uint32_t cycles = 0;
      int32_t status;
      int counting;
      if (len != TINYOPS_MODEL_INPUT_SIZE) {
        send_error(2);
        continue;
      }
      for (i = 0; i < len; ++i) tinyops_input[i] = (int8_t)payload[i];
      counting = cycle_counter_start();
      status = TINYOPS_MODEL_INVOKE(tinyops_input, tinyops_output);
      if (counting) cycles = DWT_CYCCNT;
      put_u32(payload, (uint32_t)status);
      put_u32(payload + 4, cycles);
      for (i = 0; i < TINYOPS_MODEL_OUTPUT_SIZE; ++i) payload[8 + i] = (uint8_t)tinyops_output[i];
      send_frame('r', payload, 8 + TINYOPS_MODEL_OUTPUT_SIZE);
    } else if (head[0] == 'Q' && len == 0) {
      send_frame('q', payload, 0);
      return 0;
    } else {
      send_error(3);
    }
  }
}
