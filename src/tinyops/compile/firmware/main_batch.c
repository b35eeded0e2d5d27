/* Batch firmware: golden inputs in, outputs out, through semihosting host files.
 *
 * Reads tinyops_in.bin (N inputs of INPUT_SIZE bytes, back to back) from the emulator's
 * working folder, runs one inference per input and writes the outputs to tinyops_out.bin,
 * then exits: status 0, or 2 (a file cannot be opened), 3 (invoke failed), 4 (short write).
 * The input and output buffers are globals so the instruction counter (Unicorn) finds
 * them by symbol in the same ELF.
 */
#include "tinyops_board.h"
#include "tinyops_model.h"

int8_t tinyops_input[TINYOPS_MODEL_INPUT_SIZE] __attribute__((aligned(16)));
int8_t tinyops_output[TINYOPS_MODEL_OUTPUT_SIZE] __attribute__((aligned(16)));

int main(void) {
  const int32_t fin = tinyops_sh_open("tinyops_in.bin", 1);
  const int32_t fout = tinyops_sh_open("tinyops_out.bin", 5);
  if (fin < 0 || fout < 0) return 2;
  while (tinyops_sh_read(fin, tinyops_input, TINYOPS_MODEL_INPUT_SIZE) ==
         TINYOPS_MODEL_INPUT_SIZE) {
    if (TINYOPS_MODEL_INVOKE(tinyops_input, tinyops_output) != 0) return 3;
    if (tinyops_sh_write(fout, tinyops_output, TINYOPS_MODEL_OUTPUT_SIZE) !=
        TINYOPS_MODEL_OUTPUT_SIZE) {
      return 4;
    }
  }
  tinyops_sh_close(fin);
  tinyops_sh_close(fout);
  return 0;
}
