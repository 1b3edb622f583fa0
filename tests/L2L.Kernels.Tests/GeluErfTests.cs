// Exact (erf) GELU: the float erf against a double erf on a dense grid, and the kernels against the double
// reference and finite differences.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using MathNet.Numerics;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class GeluErfTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly int[] Lengths = [1, 3, 7, 22, 127, 1001];

    // Zero and tiny values, both sides of the |x| = 1/sqrt 2 switch between series and tail, the far tails,
    // and magnitudes where x^2 overflows float.
    private static readonly float[] Extremes =
        [0f, -0f, 1e-30f, -1e-30f, 0.70710f, 0.70711f, -0.70710f, -0.70711f, 5f, -5f, 9f, -9f, 13f, -13f, 30f, -30f,
         100f, -100f, 1e4f, -1e4f, 1e19f, -1e19f, 3e38f, -3e38f];

    private static double Rtol(DeviceKind kind) => kind == DeviceKind.Cpu ? 1e-5 : 1e-3;

    [Fact]
    public void DoubleReferenceErfHasKnownValues()
    {
        // erf(1), erf(0.5), erfc(5) to 16 digits (Abramowitz & Stegun table 7.1 and its extensions).
        Assert.Equal(0.8427007929497149, SpecialFunctions.Erf(1.0), 1e-15);
        Assert.Equal(0.5204998778130465, SpecialFunctions.Erf(0.5), 1e-15);
        Assert.Equal(1.5374597944280349e-12, SpecialFunctions.Erfc(5.0), 1e-26);
        Assert.Equal(0.5, GeluReference.NormalCdf(0.0), 1e-16);
    }

    [Fact]
    public void FloatErfIsWithinTwoTenthsOfAMillionthRelativeOnADenseGrid()
    {
        var worst = 0.0;
        var worstAt = 0.0;
        void Check(float z)
        {
            var exact = SpecialFunctions.Erf(z);
            var error = exact == 0 ? Math.Abs(GeluKernels.Erf(z)) : Math.Abs(GeluKernels.Erf(z) - exact) / Math.Abs(exact);
            if (error > worst) (worst, worstAt) = (error, z);
        }
        // Measured worst: 1.8e-7 (1.5 float ulps), near |z| = 0.6.
        // Every 2^-16 over [-6, 6] (786k points; |erf| rounds to 1 in float beyond 3.9) ...
        for (var k = -6 * 65536; k <= 6 * 65536; k++) Check(k / 65536f);
        // ... and a geometric grid down to the smallest normal floats, where erf(z) ~ 2z / sqrt pi.
        for (var z = 1.2e-38; z < 6; z *= 1.001) { Check((float)z); Check(-(float)z); }
        Assert.True(worst <= 2e-7, $"float erf relative error {worst:g3} at z = {worstAt:r}");
        Assert.Equal(1f, GeluKernels.Erf(10f));
        Assert.Equal(-1f, GeluKernels.Erf(-3e38f));
        Assert.Equal(0f, GeluKernels.Erf(0f));
        Assert.True(float.IsNaN(GeluKernels.Erf(float.NaN)));
    }

    [Fact]
    public void FloatNormalCdfKeepsItsRelativeAccuracyInTheLowerTail()
    {
        // Phi(x) for x in [-13, 8] every 2^-12: the lower tail comes from erfc directly, so the relative error
        // stays small down to Phi(-13) ~ 6e-39: a few float roundings (measured 3.4e-7 near 0), plus the rounding
        // of x^2 / 2 inside exp, 6e-8 * x^2 / 2 (measured 4e-6 at x = -12).
        var worst = 0.0;
        var worstAt = 0.0;
        for (var k = -13 * 4096; k <= 8 * 4096; k++)
        {
            var x = k / 4096f;
            var exact = GeluReference.NormalCdf(x);
            var error = Math.Abs(GeluKernels.NormalCdf(x, MathF.Exp(-0.5f * x * x)) - exact) / exact;
            var allowed = 5e-7 + 3e-8 * x * x;
            if (error / allowed > worst) (worst, worstAt) = (error / allowed, x);
        }
        Assert.True(worst <= 1, $"Phi relative error {worst:g3} of its bound at x = {worstAt:r}");
    }

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
            ops.ForwardErf(backend.ComputeStream, dy.View, dx.View);
            TensorAssert.Close(GeluReference.ForwardErf(TestData.ToDouble(x)), backend.Download(dy), 1e-7, Rtol(kind), $"n={n}");
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
        ops.ForwardErf(backend.ComputeStream, dy.View, dx.View);
        ops.BackwardErf(backend.ComputeStream, dIn.View, dg.View, dx.View);
        var x = TestData.ToDouble(Extremes);
        var y = backend.Download(dy);
        var g = backend.Download(dIn);
        Assert.All(y, v => Assert.True(float.IsFinite(v)));
        Assert.All(g, v => Assert.True(float.IsFinite(v)));
        TensorAssert.Close(GeluReference.ForwardErf(x), y, 1e-7, Rtol(kind), "forward");
        TensorAssert.Close(GeluReference.BackwardErf(TestData.ToDouble(dout), x), g, 1e-7, Rtol(kind), "backward");
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesFiniteDifferences(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        foreach (var n in new[] { 1, 7, 22 })
        {
            var x = TestData.Normal(n + 20, n, 2.0);
            var dout = TestData.Normal(n + 21, n);
            using var dx = backend.Upload(x);
            using var dg = backend.Upload(dout);
            using var dIn = backend.Upload(TestData.Normal(n + 22, n)); // assigned, not accumulated
            ops.BackwardErf(backend.ComputeStream, dIn.View, dg.View, dx.View);
            var xd = TestData.ToDouble(x);
            var g = TestData.ToDouble(dout);
            var fd = FiniteDifference.Gradient(v => FiniteDifference.Dot(GeluReference.ForwardErf(v), g), xd);
            TensorAssert.Close(fd, GeluReference.BackwardErf(g, xd), 1e-8, 1e-6, $"reference vs FD n={n}");
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
            var x = TestData.Normal(2 * n + 5, n, 3.0);
            var dout = TestData.Normal(2 * n + 6, n);
            using var dx = backend.Upload(x);
            using var dg = backend.Upload(dout);
            ops.BackwardErf(backend.ComputeStream, dg.View, dg.View, dx.View); // dInput aliases dOutput
            TensorAssert.Close(GeluReference.BackwardErf(TestData.ToDouble(dout), TestData.ToDouble(x)), backend.Download(dg),
                1e-7, Rtol(kind), $"n={n}");
        }
    }

    [Fact]
    public void ExactAndTanhGeluDifferByTheKnownSmallAmount()
    {
        // The tanh form approximates x Phi(x) to within about 5e-4 absolute; the two kernels must not be the same one.
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<GeluOps>();
        var x = TestData.Uniform(9, 101, -4, 4);
        using var dx = backend.Upload(x);
        using var exact = backend.Zeros<float>(x.Length);
        using var tanh = backend.Zeros<float>(x.Length);
        ops.ForwardErf(backend.ComputeStream, exact.View, dx.View);
        ops.Forward(backend.ComputeStream, tanh.View, dx.View);
        var diff = backend.Download(exact).Zip(backend.Download(tanh), (a, b) => Math.Abs(a - b)).Max();
        Assert.InRange(diff, 1e-5, 1e-3);
    }

    [Fact]
    public void MismatchedLengthsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var a = backend.Zeros<float>(3);
        using var b = backend.Zeros<float>(4);
        var ops = backend.Get<GeluOps>();
        Assert.Throws<ArgumentException>(() => ops.ForwardErf(backend.ComputeStream, a.View, b.View));
        Assert.Throws<ArgumentException>(() => ops.BackwardErf(backend.ComputeStream, a.View, a.View, b.View));
    }
}
