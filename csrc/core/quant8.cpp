// The host's encode tables (quant8.h), built on first use.
#include "quant8.h"

namespace fastopt {
namespace quant {

const uint32_t* encode_entries(bool is_signed) {
  static const EncodeTable<true> signed_table = EncodeTable<true>::make();
  static const EncodeTable<false> unsigned_table = EncodeTable<false>::make();
  return is_signed ? signed_table.entry : unsigned_table.entry;
}

}  // namespace quant
}  // namespace fastopt
