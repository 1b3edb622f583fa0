// Residual add and accumulate against a double-precision reference.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class ResidualTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    [Theory]
    [MemberData(nameof(Devices))]
    public void AddMatchesReferenceOnOddLengths(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ResidualOps>();
        foreach (var n in new[] { 1, 3, 7, 22, 127, 1001 })
        {
            var a = TestData.Normal(n, n);
            var b = TestData.Normal(n + 1, n, 1e30);
            using var da = backend.Upload(a);
            using var db = backend.Upload(b);
            using var dout = backend.Zeros<float>(n);
            ops.Add(backend.ComputeStream, dout.View, da.View, db.View);
            var expected = new double[n];
            for (var i = 0; i < n; i++) expected[i] = (double)a[i] + b[i];
            TensorAssert.Close(expected, backend.Download(dout), 0, 1e-7, $"n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void AddInPlaceAndAccumulate(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ResidualOps>();
        const int n = 22;
        var a = TestData.Normal(1, n);
        var b = TestData.Normal(2, n);
        using var da = backend.Upload(a);
        using var db = backend.Upload(b);
        ops.Add(backend.ComputeStream, da.View, da.View, db.View); // output aliases a
        ops.Accumulate(backend.ComputeStream, da.View, db.View);
        var expected = new double[n];
        for (var i = 0; i < n; i++) expected[i] = (double)a[i] + 2.0 * b[i];
        TensorAssert.Close(expected, backend.Download(da), 1e-6, 1e-6);
    }

    [Fact]
    public void MismatchedLengthsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var a = backend.Zeros<float>(3);
        using var b = backend.Zeros<float>(4);
        var e = Assert.Throws<ArgumentException>(() => backend.Get<ResidualOps>().Add(backend.ComputeStream, a.View, a.View, b.View));
        Assert.Contains("expected 3", e.Message);
    }
}
