// GELU (tanh approximation) forward and backward against the double reference and finite differences.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class GeluTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly int[] Lengths = [1, 3, 7, 22, 127, 1001];

    // Large magnitudes where x^3 overflows float, values where tanh saturates, zero and tiny values.
    private static readonly float[] Extremes = [0f, -0f, 1e-30f, -1e-30f, 5f, -5f, 9f, -9f, 30f, -30f, 100f, -100f, 1e4f, -1e4f, 1e19f, -1e19f, 3e38f, -3e38f];

    private static double Rtol(DeviceKind kind) => kind == DeviceKind.Cpu ? 1e-5 : 1e-3;

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        foreach (var n in Lengths)
        {
            var x = TestData.Normal(n, n, 3.0);
            using var dx = backend.Upload(x);
            using var dy = backend.Zeros<float>(n);
            ops.Forward(backend.ComputeStream, dy.View, dx.View);
            TensorAssert.Close(GeluReference.Forward(TestData.ToDouble(x)), backend.Download(dy), 1e-6, Rtol(kind), $"n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardAndBackwardHandleExtremeInputs(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        var dout = TestData.Normal(3, Extremes.Length);
        using var dx = backend.Upload(Extremes);
        using var dy = backend.Zeros<float>(Extremes.Length);
        using var dg = backend.Upload(dout);
        using var dIn = backend.Zeros<float>(Extremes.Length);
        ops.Forward(backend.ComputeStream, dy.View, dx.View);
        ops.Backward(backend.ComputeStream, dIn.View, dg.View, dx.View);
        var x = TestData.ToDouble(Extremes);
        TensorAssert.Close(GeluReference.Forward(x), backend.Download(dy), 1e-6, Rtol(kind), "forward");
        TensorAssert.Close(GeluReference.Backward(TestData.ToDouble(dout), x), backend.Download(dIn), 1e-6, Rtol(kind), "backward");
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesFiniteDifferences(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        foreach (var n in new[] { 1, 7, 22 })
        {
            var x = TestData.Normal(n + 10, n, 2.0);
            var dout = TestData.Normal(n + 11, n);
            using var dx = backend.Upload(x);
            using var dg = backend.Upload(dout);
            using var dIn = backend.Upload(TestData.Normal(n + 12, n)); // assigned, not accumulated
            ops.Backward(backend.ComputeStream, dIn.View, dg.View, dx.View);
            var xd = TestData.ToDouble(x);
            var g = TestData.ToDouble(dout);
            var fd = FiniteDifference.Gradient(v => FiniteDifference.Dot(GeluReference.Forward(v), g), xd);
            var reference = GeluReference.Backward(g, xd);
            TensorAssert.Close(fd, reference, 1e-8, 1e-6, $"reference vs FD n={n}");
            TensorAssert.Close(fd, backend.Download(dIn), 1e-5, Rtol(kind) * 10, $"device vs FD n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesReferenceInPlace(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        foreach (var n in Lengths)
        {
            var x = TestData.Normal(2 * n, n, 3.0);
            var dout = TestData.Normal(2 * n + 1, n);
            using var dx = backend.Upload(x);
            using var dg = backend.Upload(dout);
            ops.Backward(backend.ComputeStream, dg.View, dg.View, dx.View); // dInput aliases dOutput
            TensorAssert.Close(GeluReference.Backward(TestData.ToDouble(dout), TestData.ToDouble(x)), backend.Download(dg),
                1e-6, Rtol(kind), $"n={n}");
        }
    }

    [Fact]
    public void MismatchedLengthsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var a = backend.Zeros<float>(3);
        using var b = backend.Zeros<float>(4);
        var ops = backend.Get<GeluOps>();
        Assert.Throws<ArgumentException>(() => ops.Forward(backend.ComputeStream, a.View, b.View));
        Assert.Throws<ArgumentException>(() => ops.Backward(backend.ComputeStream, a.View, a.View, b.View));
    }
}
