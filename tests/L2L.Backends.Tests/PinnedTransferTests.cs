// Asynchronous copies through pinned host buffers on the copy stream, in sub-ranges.
using L2L.Backends;
using L2L.TestSupport;
using Xunit;

namespace L2L.Backends.Tests;

public sealed class PinnedTransferTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    [Theory]
    [MemberData(nameof(Devices))]
    public void RoundTripsSubRangesOnTheCopyStream(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        using var host = backend.AllocatePinned<float>(30);
        for (var i = 0; i < 30; i++) host.Span[i] = i;
        using var device = backend.Allocate<float>(10, MemoryCategory.Other, "slot");
        host.CopyToDeviceAsync(backend.CopyStream, device.View, offset: 10, count: 10);
        host.CopyFromDeviceAsync(backend.CopyStream, device.View, offset: 20, count: 10);
        backend.CopyStream.Synchronize();
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(10 + i, host.Span[20 + i]);
            Assert.Equal(i, host.Span[i]);
        }
    }

    [Fact]
    public void OutOfRangeCopiesAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var host = backend.AllocatePinned<float>(8);
        using var device = backend.Allocate<float>(4, MemoryCategory.Other, "slot");
        Assert.Throws<ArgumentOutOfRangeException>(() => host.CopyToDeviceAsync(backend.CopyStream, device.View, offset: 6));
    }

    [Fact]
    public void KernelGroupsAreLoadedOncePerBackend()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        Assert.Same(backend.Get<Ops.ResidualOps>(), backend.Get<Ops.ResidualOps>());
    }
}
