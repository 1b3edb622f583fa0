// Dropout with hashed masks: against an independent reference, statistically, and as its own backward.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class DropoutTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly int[] Lengths = [1, 3, 7, 22, 127, 1001];

    // An independent statement of the mask: SplitMix64 of key + (index + 1) * golden, top 24 bits against round(p * 2^24).
    private static bool ReferenceKeep(ulong key, long index, double p)
    {
        unchecked
        {
            var z = key + (ulong)(index + 1) * 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            return (z >> 40) >= (ulong)Math.Round(p * 16777216.0);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void MatchesTheReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<DropoutOps>();
        foreach (var p in new[] { 0f, 0.1f, 0.5f, 0.9f })
        {
            foreach (var n in Lengths)
            {
                var x = TestData.Normal(n + 17, n);
                x[0] = float.PositiveInfinity; // a dropped element is 0 whatever its input
                var key = DropoutKernels.Key(5, 3, 2, 1);
                const long offset = 1000;
                using var input = backend.Upload(x);
                using var output = backend.Zeros<float>(n);
                ops.Apply(backend.ComputeStream, output.View, input.View, p, key, offset);
                var expected = new double[n];
                for (var i = 0; i < n; i++)
                    expected[i] = ReferenceKeep(key, offset + i, p) ? x[i] * (double)(1f / (1f - p)) : 0.0;
                var actual = backend.Download(output);
                for (var i = 0; i < n; i++)
                {
                    if (double.IsInfinity(expected[i])) Assert.Equal(float.PositiveInfinity, actual[i]);
                    else Assert.Equal((float)expected[i], actual[i]);
                }
                // In place gives the same.
                ops.Apply(backend.ComputeStream, input.View, input.View, p, key, offset);
                Assert.Equal(actual, backend.Download(input));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void KeepFractionIsOneMinusP(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<DropoutOps>();
        const int n = 200_003;
        var ones = Enumerable.Repeat(1f, n).ToArray();
        using var input = backend.Upload(ones);
        using var output = backend.Zeros<float>(n);
        foreach (var p in new[] { 0.1f, 0.5f })
        {
            ops.Apply(backend.ComputeStream, output.View, input.View, p, DropoutKernels.Key(1, 0, 0, 0), 0);
            var y = backend.Download(output);
            var kept = y.Count(v => v != 0);
            var sigma = Math.Sqrt(p * (1 - p) / n);
            Assert.InRange(kept / (double)n, 1 - p - 5 * sigma, 1 - p + 5 * sigma);
            // Inverted dropout keeps the mean: E[y] = 1.
            Assert.InRange(y.Average(v => (double)v), 1 - 5 * sigma / (1 - p), 1 + 5 * sigma / (1 - p));
            // Neighbouring elements are not correlated (a counter-based hash, not a short-period generator).
            var both = 0;
            for (var i = 0; i + 1 < n; i++) if (y[i] != 0 && y[i + 1] != 0) both++;
            Assert.InRange(both / (double)(n - 1), (1 - p) * (1 - p) - 6 * sigma, (1 - p) * (1 - p) + 6 * sigma);
        }
    }

    [Fact]
    public void MasksDifferAcrossStepsLayersSitesAndOffsets()
    {
        const int n = 4096;
        bool[] Mask(ulong key, long offset) => Enumerable.Range(0, n).Select(i => DropoutKernels.Keep(key, offset + i, DropoutKernels.Threshold(0.5f))).ToArray();
        var baseline = Mask(DropoutKernels.Key(1, 0, 1, 0), 0);
        var others = new[]
        {
            Mask(DropoutKernels.Key(2, 0, 1, 0), 0), // seed
            Mask(DropoutKernels.Key(1, 1, 1, 0), 0), // step
            Mask(DropoutKernels.Key(1, 0, 2, 0), 0), // layer
            Mask(DropoutKernels.Key(1, 0, 1, 1), 0), // site
            Mask(DropoutKernels.Key(1, 0, 1, 0), n), // the next micro-batch's elements
        };
        foreach (var other in others)
        {
            var agree = baseline.Zip(other).Count(t => t.First == t.Second) / (double)n;
            Assert.InRange(agree, 0.45, 0.55); // independent masks agree on half the elements
        }
        Assert.Equal(baseline, Mask(DropoutKernels.Key(1, 0, 1, 0), 0));
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardIsTheSameMaskOnTheGradient(DeviceKind kind)
    {
        // y = dropout(x) is linear: sum(y * dy) = sum(x * dropout(dy)) for any dy, exactly the finite-difference identity.
        var backend = fixture.Get(kind);
        var ops = backend.Get<DropoutOps>();
        const int n = 127;
        var x = TestData.Normal(1, n);
        var dy = TestData.Normal(2, n);
        var key = DropoutKernels.Key(9, 4, 3, 2);
        using var dx = backend.Upload(x);
        using var ddy = backend.Upload(dy);
        using var y = backend.Zeros<float>(n);
        using var dxOut = backend.Zeros<float>(n);
        ops.Apply(backend.ComputeStream, y.View, dx.View, 0.3f, key, 7);
        ops.Apply(backend.ComputeStream, dxOut.View, ddy.View, 0.3f, key, 7);
        var yh = backend.Download(y);
        var gh = backend.Download(dxOut);
        double lhs = 0, rhs = 0, magnitude = 0;
        for (var i = 0; i < n; i++) { lhs += (double)yh[i] * dy[i]; rhs += (double)x[i] * gh[i]; magnitude += Math.Abs((double)yh[i] * dy[i]); }
        // Each side rounds x * scale or dy * scale to float once per element.
        Assert.Equal(lhs, rhs, 1e-7 * magnitude);
        Assert.NotEqual(0, lhs);
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Apply(backend.ComputeStream, y.View, dx.View, 1f, key, 0));
    }
}
