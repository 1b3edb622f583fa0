// The stash codec (8/4/2-bit per-group stochastic rounding) against a double-precision reference: codes, ranges,
// error bound, unbiasedness over many random streams, constant and extreme groups, packed sizes, keys.
using ILGPU;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class StashCodecTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly int[] Bits = [8, 4, 2];
    private static readonly int[] Lengths = [1, 3, 7, 22, 127, 1000];
    private static readonly StashEncodeLayout[] Layouts = [StashEncodeLayout.Cooperative, StashEncodeLayout.PerThread];

    /// <summary>The double-precision reference: ranges, codes and decoded values, plus how close each draw was to its rounding threshold.</summary>
    private static (float[] Lo, float[] Hi, uint[] Codes, double[] Decoded, double[] Margin) Reference(float[] x, int groupSize, int bits, ulong key)
    {
        var groups = (x.Length + groupSize - 1) / groupSize;
        var lo = new float[groups];
        var hi = new float[groups];
        var codes = new uint[x.Length];
        var decoded = new double[x.Length];
        var margin = new double[x.Length];
        double levels = (1 << bits) - 1;
        for (var g = 0; g < groups; g++)
        {
            var start = g * groupSize;
            var end = Math.Min(x.Length, start + groupSize);
            lo[g] = x[start];
            hi[g] = x[start];
            for (var i = start; i < end; i++) { lo[g] = Math.Min(lo[g], x[i]); hi[g] = Math.Max(hi[g], x[i]); }
            double range = (double)hi[g] - lo[g];
            for (var i = start; i < end; i++)
            {
                if (range == 0) { decoded[i] = lo[g]; margin[i] = 1; continue; }
                var t = (x[i] - (double)lo[g]) / range * levels;
                var whole = Math.Floor(t);
                double u = StashCodecKernels.Uniform(key, i);
                var q = (uint)whole + (u < t - whole ? 1u : 0u);
                codes[i] = Math.Min(q, (uint)levels);
                decoded[i] = lo[g] + codes[i] * range / levels;
                margin[i] = Math.Abs(u - (t - whole));
            }
        }
        return (lo, hi, codes, decoded, margin);
    }

    private static uint Code(uint[] encoded, int i, int bits) => (encoded[i / (32 / bits)] >> (i % (32 / bits) * bits)) & ((1u << bits) - 1u);

    private static long ExpectedWords(int n, int groupSize, int bits) =>
        (n * (long)bits + 31) / 32 + 2L * ((n + groupSize - 1) / groupSize);

    private (uint[] Encoded, float[] Decoded) RoundTrip(Backend backend, float[] x, int groupSize, int bits, ulong key, StashEncodeLayout layout)
    {
        var ops = backend.Get<StashCodecOps>();
        var words = StashCodecOps.EncodedWords(x.Length, groupSize, bits);
        // Every word starts as a sentinel, so a word the encoder forgot to write shows up.
        using var encoded = backend.Upload(Enumerable.Repeat(0xDEADBEEFu, (int)words).ToArray());
        using var input = backend.Upload(x);
        using var output = backend.Zeros<float>(x.Length);
        ops.Encode(backend.ComputeStream, encoded.View, input.View, groupSize, bits, key, layout);
        ops.Decode(backend.ComputeStream, output.View, encoded.View, groupSize, bits);
        return (backend.Download(encoded), backend.Download(output));
    }

    private static double Step(float lo, float hi, int bits) => ((double)hi - lo) / ((1 << bits) - 1);

    private static double Ulp(float lo, float hi)
    {
        var m = Math.Max(Math.Abs(lo), Math.Abs(hi));
        return Math.Max((double)m - MathF.BitDecrement(m), float.Epsilon);
    }

    [Fact]
    public void PackedSizesFollowTheFormula()
    {
        foreach (var bits in Bits)
        foreach (var g in new[] { 16, 48, 256 })
        foreach (var n in Lengths.Append(0).Append(256).Append(4096 + 5))
            Assert.Equal(ExpectedWords(n, g, bits), StashCodecOps.EncodedWords(n, g, bits));
        // 256 values at 8 bits: 64 payload words + 2 range words = 264 bytes for 1024 bytes of FP32.
        Assert.Equal(66, StashCodecOps.EncodedWords(256, 256, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => StashCodecOps.EncodedWords(10, 24, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => StashCodecOps.EncodedWords(10, 256, 3));
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void MatchesReferenceOnOddLengthsAndPartialGroups(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const ulong key = 0x1234_5678_9ABC_DEF0UL;
        foreach (var bits in Bits)
        foreach (var groupSize in new[] { 48, 256 })
        foreach (var n in Lengths)
        foreach (var layout in Layouts)
        {
            var x = TestData.Normal(n * 31 + bits, n, 1.5, 0.3);
            var (encoded, decoded) = RoundTrip(backend, x, groupSize, bits, key, layout);
            var reference = Reference(x, groupSize, bits, key);
            var what = $"b={bits} G={groupSize} n={n} {layout}";
            Assert.Equal(ExpectedWords(n, groupSize, bits), encoded.Length);
            var payload = (int)((n * (long)bits + 31) / 32);
            for (var g = 0; g < reference.Lo.Length; g++)
            {
                Assert.True(BitConverter.SingleToUInt32Bits(reference.Lo[g]) == encoded[payload + 2 * g], $"{what}: min of group {g}");
                Assert.True(BitConverter.SingleToUInt32Bits(reference.Hi[g]) == encoded[payload + 2 * g + 1], $"{what}: max of group {g}");
            }
            // The bits beyond the last value are zero: the payload is fully written and nothing else is.
            var perWord = 32 / bits;
            if (n % perWord != 0)
                Assert.Equal(0u, encoded[payload - 1] >> (n % perWord * bits));
            for (var i = 0; i < n; i++)
            {
                var g = i / groupSize;
                var step = Step(reference.Lo[g], reference.Hi[g], bits);
                var code = Code(encoded, i, bits);
                // FP32 and double may round t differently; only a draw within 1e-3 of its threshold may then differ, by one.
                if (reference.Margin[i] > 1e-3)
                    Assert.True(reference.Codes[i] == code, $"{what}: code {i} is {code}, reference {reference.Codes[i]}");
                else
                    Assert.True(Math.Abs((long)reference.Codes[i] - code) <= 1, $"{what}: code {i}");
                var expected = reference.Codes[i] == code ? reference.Decoded[i] : reference.Lo[g] + code * step;
                var tol = 1e-6 * step + 8 * Ulp(reference.Lo[g], reference.Hi[g]);
                Assert.True(Math.Abs(decoded[i] - expected) <= tol, $"{what}: decoded {i} = {decoded[i]:G9}, reference {expected:G9}");
                Assert.True(Math.Abs(decoded[i] - x[i]) <= step * (1 + 1e-6) + tol, $"{what}: decoded {i} = {decoded[i]:G9} is more than a step {step:G4} from {x[i]:G9}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void CooperativeAndPerThreadLayoutsGiveTheSameBits(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var bits in Bits)
        {
            var x = TestData.Normal(5 + bits, 3 * 256 + 77, 2.0, -1.0);
            var a = RoundTrip(backend, x, 256, bits, 99, StashEncodeLayout.Cooperative);
            var b = RoundTrip(backend, x, 256, bits, 99, StashEncodeLayout.PerThread);
            Assert.Equal(a.Encoded, b.Encoded);
            Assert.Equal(a.Decoded, b.Decoded);
        }
    }

    /// <summary>
    /// Unbiasedness. Each decoded value takes one of two neighbouring levels one step apart, so by Hoeffding's
    /// inequality the mean of K independent decodes is within eps of its expectation with probability at least
    /// 1 - 2 exp(-2 K eps^2 / step^2). With eps = 4 step / sqrt(K) that is 1 - 2.5e-14 per value, so the bound
    /// below holds for essentially every choice of seeds; a biased rounding (round to nearest is off by up to
    /// step / 2, a quarter step on average) fails it by far at K = 2048. The samples come from 32 stream keys
    /// times 64 copies of the input laid end to end (copies are whole groups, so each copy is quantised with the
    /// same ranges but its own element counters).
    /// </summary>
    [Theory]
    [MemberData(nameof(Devices))]
    public void DecodedMeanConvergesToTheInput(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int groupSize = 64, copies = 64, keys = 32, samples = copies * keys;
        var x = TestData.Normal(3, 5 * groupSize, 1.0, 0.5);
        // Values exactly on a level, and at its ends, must stay exact in the mean too.
        x[0] = 4f; x[1] = -4f; x[2] = 0f;
        var tiled = Enumerable.Range(0, copies).SelectMany(_ => x).ToArray();
        foreach (var bits in Bits)
        {
            var sum = new double[x.Length];
            for (var k = 0; k < keys; k++)
            {
                var key = StashCodecKernels.StreamKey(1337, k, 3, 1);
                var (_, decoded) = RoundTrip(backend, tiled, groupSize, bits, key, StashEncodeLayout.Auto);
                for (var i = 0; i < decoded.Length; i++) sum[i % x.Length] += decoded[i];
            }
            var reference = Reference(x, groupSize, bits, 0);
            var worst = 0.0;
            for (var i = 0; i < x.Length; i++)
            {
                var g = i / groupSize;
                var step = Step(reference.Lo[g], reference.Hi[g], bits);
                var bound = 4 * step / Math.Sqrt(samples) + 1e-6 * step + 8 * Ulp(reference.Lo[g], reference.Hi[g]);
                var error = Math.Abs(sum[i] / samples - x[i]);
                worst = Math.Max(worst, error / step);
                Assert.True(error <= bound, $"b={bits}: mean of {samples} decodes of {x[i]:G9} is {sum[i] / samples:G9}, off by {error:G3} > {bound:G3}");
            }
            Assert.True(worst > 0, "the decodes should not all be exact"); // stochastic rounding did happen
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ConstantGroupsAreExact(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int groupSize = 32;
        var x = new float[4 * groupSize + 5];
        Array.Fill(x, 3.25f, 0, groupSize);
        Array.Fill(x, 0f, groupSize, groupSize);
        Array.Fill(x, -1e30f, 2 * groupSize, groupSize);
        TestData.Normal(8, groupSize).CopyTo(x, 3 * groupSize);  // one ordinary group between constant ones
        Array.Fill(x, float.Epsilon, 4 * groupSize, 5);          // a constant partial last group of subnormals
        foreach (var bits in Bits)
        foreach (var layout in Layouts)
        {
            var (_, decoded) = RoundTrip(backend, x, groupSize, bits, 5, layout);
            for (var i = 0; i < x.Length; i++)
            {
                if (i / groupSize == 3) continue;
                Assert.True(BitConverter.SingleToUInt32Bits(x[i]) == BitConverter.SingleToUInt32Bits(decoded[i]), $"b={bits} {layout}: {i} decoded {decoded[i]:G9}, input {x[i]:G9}");
            }
        }
        var single = RoundTrip(backend, [7.5f], 256, 2, 1, StashEncodeLayout.Auto);
        Assert.Equal(7.5f, single.Decoded[0]);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ExtremeFiniteRangesStayFiniteAndWithinAStep(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int groupSize = 16;
        var rng = new Random(17);
        float[] Group(Func<float> value) => Enumerable.Range(0, groupSize).Select(_ => value()).ToArray();
        var groups = new[]
        {
            Group(() => (float)((rng.NextDouble() * 2 - 1) * float.MaxValue)), // max - min overflows FP32
            Group(() => rng.Next(2) == 0 ? float.MaxValue : -float.MaxValue),
            Group(() => (float)(rng.NextDouble() * 1e-40)),                      // a subnormal range
            Group(() => (float)(1e7 + rng.Next(4))),                              // a large offset, a range of a few ulps
            Group(() => rng.Next(2) == 0 ? float.MaxValue : float.MaxValue * 0.999f),
            Group(() => (float)((rng.NextDouble() - 0.5) * 1e-30)),
        };
        groups[0][0] = float.MaxValue;
        groups[0][1] = -float.MaxValue;
        var x = groups.SelectMany(g => g).Append(-float.MaxValue).Append(float.MaxValue).Append(0f).ToArray();
        foreach (var bits in Bits)
        foreach (var layout in Layouts)
        {
            var (_, decoded) = RoundTrip(backend, x, groupSize, bits, 77, layout);
            var reference = Reference(x, groupSize, bits, 77);
            for (var i = 0; i < x.Length; i++)
            {
                var g = i / groupSize;
                var step = Step(reference.Lo[g], reference.Hi[g], bits);
                Assert.True(float.IsFinite(decoded[i]), $"b={bits} {layout}: {i} decoded {decoded[i]} from {x[i]:G9}");
                Assert.True(decoded[i] >= reference.Lo[g] && decoded[i] <= reference.Hi[g], $"b={bits} {layout}: {i} decoded {decoded[i]:G9} outside its group's range");
                Assert.True(Math.Abs(decoded[i] - (double)x[i]) <= step * (1 + 1e-6) + 8 * Ulp(reference.Lo[g], reference.Hi[g]),
                    $"b={bits} {layout}: {i} decoded {decoded[i]:G9}, input {x[i]:G9}, step {step:G4}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void DeterministicPerKeyAndDifferentAcrossKeys(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var x = TestData.Normal(21, 1000);
        foreach (var bits in Bits)
        {
            var key = StashCodecKernels.StreamKey(1337, 10, 2, 1);
            var first = RoundTrip(backend, x, 256, bits, key, StashEncodeLayout.Auto);
            var again = RoundTrip(backend, x, 256, bits, key, StashEncodeLayout.Auto);
            Assert.Equal(first.Encoded, again.Encoded);
            Assert.Equal(first.Decoded, again.Decoded);
            foreach (var other in new[]
                     {
                         StashCodecKernels.StreamKey(1338, 10, 2, 1), StashCodecKernels.StreamKey(1337, 11, 2, 1),
                         StashCodecKernels.StreamKey(1337, 10, 3, 1), StashCodecKernels.StreamKey(1337, 10, 2, 0),
                     })
            {
                Assert.NotEqual(key, other);
                var changed = RoundTrip(backend, x, 256, bits, other, StashEncodeLayout.Auto);
                var differing = Enumerable.Range(0, x.Length).Count(i => Code(changed.Encoded, i, bits) != Code(first.Encoded, i, bits));
                // About half the values fall between levels with a fraction far from 0 and 1; a new stream re-draws them all.
                Assert.True(differing > x.Length / 10, $"b={bits}: only {differing} of {x.Length} codes changed with the key");
            }
        }
    }

    [Fact]
    public void UniformIsUniform()
    {
        // Mean 1/2 and variance 1/12 over one stream, within 5 standard errors; every draw in [0, 1).
        const int n = 200_000;
        var key = StashCodecKernels.StreamKey(1, 2, 3, 4);
        double sum = 0, sumSq = 0;
        for (var i = 0; i < n; i++)
        {
            double u = StashCodecKernels.Uniform(key, i);
            Assert.True(u is >= 0 and < 1);
            sum += u;
            sumSq += u * u;
        }
        var mean = sum / n;
        Assert.True(Math.Abs(mean - 0.5) < 5 * Math.Sqrt(1.0 / 12 / n), $"mean {mean}");
        Assert.True(Math.Abs(sumSq / n - mean * mean - 1.0 / 12) < 5 * Math.Sqrt(1.0 / 180 / n), $"variance {sumSq / n - mean * mean}");
    }

    /// <summary>Σ_g n_g·(max − min)² from the encoded range words, against a double-precision sum over the input's groups.</summary>
    [Theory]
    [MemberData(nameof(Devices))]
    public void RangeEnergyMatchesTheReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<StashCodecOps>();
        using var energy = backend.Zeros<float>(1);
        foreach (var bits in Bits)
        foreach (var groupSize in new[] { 16, 48, 256 })
        foreach (var n in Lengths.Append(5000))
        {
            var x = TestData.Normal(n * 7 + bits, n, 2.0, -0.5);
            // Make one group constant: it adds nothing.
            for (var i = 0; i < Math.Min(groupSize, n); i++) x[i] = 3.25f;
            var (encoded, _) = RoundTrip(backend, x, groupSize, bits, 99, StashEncodeLayout.Auto);
            using var device = backend.Upload(encoded);
            ops.RangeEnergy(backend.ComputeStream, energy.View, device.View, n, groupSize, bits);
            var got = backend.Download(energy)[0];
            double expected = 0;
            for (var start = 0; start < n; start += groupSize)
            {
                var group = x.Skip(start).Take(Math.Min(groupSize, n - start)).ToArray();
                double range = (double)group.Max() - group.Min();
                expected += group.Length * range * range;
            }
            Assert.True(Math.Abs(got - expected) <= 1e-5 * expected + 1e-30, $"b={bits} G={groupSize} n={n}: {got} vs {expected}");
            if (n <= groupSize) Assert.Equal(0f, got);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void RangeEnergyOfAnOverflowingRangeIsInfinite(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<StashCodecOps>();
        using var energy = backend.Zeros<float>(1);
        var x = new float[40];
        x[3] = float.MaxValue;
        x[7] = -float.MaxValue;
        var (encoded, _) = RoundTrip(backend, x, 16, 4, 1, StashEncodeLayout.Auto);
        using var device = backend.Upload(encoded);
        ops.RangeEnergy(backend.ComputeStream, energy.View, device.View, x.Length, 16, 4);
        Assert.Equal(float.PositiveInfinity, backend.Download(energy)[0]);
    }
}
