// Pinned host buffers past 2^31 elements: 64-bit offsets for indexing, paging and copies (about 2 GiB of host memory).
using L2L.Backends;
using L2L.TestSupport;
using Xunit;

namespace L2L.Backends.Tests;

public sealed class PinnedLargeBufferTests(BackendFixture fixture)
{
    private const long Past = (1L << 31) + 17; // 2^31 + 17 one-byte elements: 2 GiB + 17 bytes of host memory

    [Fact]
    public void BufferPastTwoToTheThirtyOneIndexesPagesAndCopies()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var host = backend.AllocatePinned<byte>(Past);
        Assert.Equal(Past, host.Length);
        var e = Assert.Throws<InvalidOperationException>(() => host.Span.Length);
        Assert.Contains("Slice", e.Message);

        // Fill pages through the whole buffer; both ends and both sides of 2^31 must see it.
        host.Fill(7);
        foreach (var i in new[] { 0L, int.MaxValue - 1L, int.MaxValue, 1L << 31, Past - 1 })
            Assert.Equal(7, host[i]);

        // A slice that straddles 2^31, written through the span and read back through the indexer.
        var straddle = host.Slice(int.MaxValue - 3, 8);
        for (var i = 0; i < straddle.Length; i++) straddle[i] = (byte)(100 + i);
        for (var i = 0; i < 8; i++) Assert.Equal(100 + i, host[int.MaxValue - 3L + i]);

        // Copies at offsets past 2^31 (the device side is small): host -> device from the straddle, device -> the end.
        using var device = backend.Allocate<byte>(8, MemoryCategory.Other, "slot");
        host.CopyToDeviceAsync(backend.CopyStream, device.View, offset: int.MaxValue - 3L, count: 8);
        host.CopyFromDeviceAsync(backend.CopyStream, device.View, offset: Past - 8, count: 8);
        backend.CopyStream.Synchronize();
        for (var i = 0; i < 8; i++) Assert.Equal(100 + i, host[Past - 8 + i]);
        Assert.Equal(7, host[Past - 9]);

        Assert.Throws<ArgumentOutOfRangeException>(() => host[Past]);
        Assert.Throws<ArgumentOutOfRangeException>(() => host.Slice(Past - 4, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => host.CopyToDeviceAsync(backend.CopyStream, device.View, offset: Past - 4, count: 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => host.CopyToDeviceAsync(backend.CopyStream, device.View, offset: long.MaxValue - 2, count: 8));
    }

    [Fact]
    public void EmptyAndDisposedBuffers()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var host = backend.AllocatePinned<float>(0);
        Assert.Equal(0, host.Span.Length);
        host.Fill(1f);
        host.Dispose();
        host.Dispose();
        Assert.Throws<ObjectDisposedException>(() => host.Span.Length);
    }
}
