// stepgraph/runtime/buffer.h — memory owned per device, and registered
// pinned host memory mapped to every device.
//
// Note [Buffer lifetime]
// A Buffer is the user's move-only handle to a block of memory. The memory
// itself is released when the last reference goes: the Buffer, and every
// captured graph whose nodes declared an access to it. So a graph never reads
// freed memory, whatever order the user destroys things in (DESIGN 1.2:
// "every buffer a graph references outlives that graph").
//
// Thread-safety: a Buffer's accessors are thread-safe; moving or destroying
// one handle is not synchronised with other uses of that same handle.
// Capture: accessors may be called during capture; allocation may not
// (Backend::allocate).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include <stepgraph/runtime/types.h>

namespace stepgraph::runtime {

class Buffer;

/// (buffer, offset, bytes): the operand of copies and memsets.
struct BufferSlice {
  std::shared_ptr<const detail::BufferImpl> buffer;
  std::size_t offset = 0;
  std::size_t bytes = 0;
};

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::shared_ptr<detail::BufferImpl> impl) : impl_(std::move(impl)) {}
  Buffer(Buffer&&) noexcept = default;
  Buffer& operator=(Buffer&&) noexcept = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() = default;

  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] MemoryKind kind() const;
  /// The owning device; -1 for pinned host memory (visible to every device).
  [[nodiscard]] int device() const;
  [[nodiscard]] std::uint64_t id() const;
  /// The device-visible address: what a kernel receives.
  [[nodiscard]] void* data() const;
  template <class T>
  [[nodiscard]] T* data() const {
    return static_cast<T*>(data());
  }
  /// The host address of pinned memory; InvalidState for device memory
  /// (device memory is read through a copy, on both backends).
  [[nodiscard]] void* host_data() const;
  template <class T>
  [[nodiscard]] std::span<T> host_span() const {
    return {static_cast<T*>(host_data()), size() / sizeof(T)};
  }

  /// The whole buffer, or a byte range of it, as a copy/memset operand.
  [[nodiscard]] BufferSlice slice() const;
  [[nodiscard]] BufferSlice slice(std::size_t offset, std::size_t bytes) const;

  [[nodiscard]] const std::shared_ptr<detail::BufferImpl>& impl() const noexcept { return impl_; }

 private:
  std::shared_ptr<detail::BufferImpl> impl_;
};

/// Declared accesses of a launch. Without offset/bytes: the whole buffer.
[[nodiscard]] BufferAccess read(const Buffer& b);
[[nodiscard]] BufferAccess read(const Buffer& b, std::size_t offset, std::size_t bytes);
[[nodiscard]] BufferAccess write(const Buffer& b);
[[nodiscard]] BufferAccess write(const Buffer& b, std::size_t offset, std::size_t bytes);
[[nodiscard]] BufferAccess read_write(const Buffer& b);
[[nodiscard]] BufferAccess read_write(const Buffer& b, std::size_t offset, std::size_t bytes);
/// An access to host memory given by pointer. It must lie inside memory
/// registered with Backend::register_host or allocate_pinned; the launch
/// throws InvalidArgument otherwise.
[[nodiscard]] BufferAccess host_range(const void* ptr, std::size_t bytes, Access access);

}  // namespace stepgraph::runtime
