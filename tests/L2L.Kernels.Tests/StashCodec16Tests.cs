// The stash codec over BF16 and FP16 activations: its words equal the FP32 encode of the widened values, its decode is
// the FP32 decode rounded once to 16 bits, and the adaptive codec's two measures match FP32 bit for bit.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class StashCodec16Tests(BackendFixture fixture)
{
    private static readonly int[] Bits = [8, 4, 2];
    private static readonly int[] Lengths = [1, 3, 7, 22, 127, 203];
    private static readonly StashEncodeLayout[] Layouts = [StashEncodeLayout.Cooperative, StashEncodeLayout.PerThread];

    /// <summary>
    /// Values already in the 16-bit format (so the FP32 reference sees exactly what the device stores): a normal sample,
    /// with, where the length allows, a constant first group, the format's extreme finite values (for BF16 their range
    /// overflows FP32, the codec's halving path), a subnormal, and a negative zero.
    /// </summary>
    private static float[] Inputs(Store16 format, int n, int groupSize, int seed)
    {
        var x = Sixteen.Round(format, TestData.Normal(seed, n, 3.0, 0.25));
        if (n > groupSize + 8)
        {
            Array.Fill(x, Sixteen.Round(format, 1.375f), 0, groupSize);
            var largest = format == Store16.Bf16 ? Bf16.FromSingle(3.3e38f).ToSingle() : 65504f;
            x[groupSize + 1] = largest;
            x[groupSize + 2] = -largest;
            x[groupSize + 3] = format == Store16.Bf16 ? Bf16.FromSingle(1e-39f).ToSingle() : Sixteen.FromHalf(Sixteen.ToHalf(6e-8f));
            x[groupSize + 4] = -0f;
        }
        return x;
    }

    private static ushort RoundBits(Store16 format, float value) =>
        format == Store16.Bf16 ? Bf16.RoundBits(value) : BitConverter.HalfToUInt16Bits((System.Half)value);

    private static void Encode16(StashCodecOps ops, Backend backend, Buffer16 input, DeviceBuffer<uint> encoded, int groupSize, int bits, ulong key, StashEncodeLayout layout)
    {
        if (input.Format == Store16.Bf16) ops.Encode(backend.ComputeStream, encoded.View, input.Bf, groupSize, bits, key, layout);
        else ops.Encode(backend.ComputeStream, encoded.View, input.Fp, groupSize, bits, key, layout);
    }

    private static void Decode16(StashCodecOps ops, Backend backend, Buffer16 output, DeviceBuffer<uint> encoded, int groupSize, int bits)
    {
        if (output.Format == Store16.Bf16) ops.Decode(backend.ComputeStream, output.Bf, encoded.View, groupSize, bits);
        else ops.Decode(backend.ComputeStream, output.Fp, encoded.View, groupSize, bits);
    }

    private static uint[] Sentinels(long words) => Enumerable.Repeat(0xDEADBEEFu, (int)words).ToArray();

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void CodesAreTheFp32CodesOfTheWidenedValues(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<StashCodecOps>();
        foreach (var bits in Bits)
        foreach (var groupSize in new[] { 16, 48 })
        foreach (var n in Lengths)
        foreach (var layout in Layouts)
        {
            var x = Inputs(format, n, groupSize, 40 * n + bits);
            var key = StashCodecKernels.StreamKey(1337, n, bits, groupSize);
            var words = StashCodecOps.EncodedWords(n, groupSize, bits);
            using var wide = backend.Upload(x);
            using var narrow = new Buffer16(backend, format, x);
            Assert.Equal(x.Select(v => BitConverter.SingleToUInt32Bits(v)), narrow.Download().Select(v => BitConverter.SingleToUInt32Bits(v)));
            using var expected = backend.Upload(Sentinels(words));
            using var actual = backend.Upload(Sentinels(words));
            ops.Encode(backend.ComputeStream, expected.View, wide.View, groupSize, bits, key, layout);
            Encode16(ops, backend, narrow, actual, groupSize, bits, key, layout);
            Assert.True(backend.Download(expected).SequenceEqual(backend.Download(actual)), $"{format} b={bits} G={groupSize} n={n} {layout}: words differ from FP32's");
        }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void DecodeIsTheFp32DecodeRoundedTo16Bits(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<StashCodecOps>();
        foreach (var bits in Bits)
        foreach (var groupSize in new[] { 16, 48 })
        foreach (var n in Lengths)
        {
            var x = Inputs(format, n, groupSize, 17 * n + bits);
            var words = StashCodecOps.EncodedWords(n, groupSize, bits);
            using var narrow = new Buffer16(backend, format, x);
            using var encoded = backend.Zeros<uint>(words);
            Encode16(ops, backend, narrow, encoded, groupSize, bits, 4242, StashEncodeLayout.Auto);
            using var wide = backend.Zeros<float>(n);
            using var decoded = new Buffer16(backend, format, n);
            ops.Decode(backend.ComputeStream, wide.View, encoded.View, groupSize, bits);
            Decode16(ops, backend, decoded, encoded, groupSize, bits);
            var reference = backend.Download(wide);
            var got = decoded.Bits();
            var values = decoded.Download();
            var range = backend.Download(encoded)[StashCodecKernels.PayloadWords(n, bits)..].Select(BitConverter.UInt32BitsToSingle).ToArray();
            var what = $"{format} b={bits} G={groupSize} n={n}";
            for (var i = 0; i < n; i++)
            {
                Assert.True(RoundBits(format, reference[i]) == got[i], $"{what}: {i} decoded {values[i]:G9}, FP32 decode {reference[i]:G9} rounds to another value");
                float lo = range[2 * (i / groupSize)], hi = range[2 * (i / groupSize) + 1];
                // The ends of the range are 16-bit values, so rounding cannot leave it; a constant group is exact.
                Assert.True(values[i] >= lo && values[i] <= hi, $"{what}: {i} decoded {values[i]:G9} outside [{lo:G9}, {hi:G9}]");
                if (lo == hi)
                    Assert.True(BitConverter.SingleToUInt32Bits(values[i]) == BitConverter.SingleToUInt32Bits(x[i]) || (x[i] == 0 && values[i] == 0), $"{what}: {i} constant group decoded {values[i]:G9}, input {x[i]:G9}");
            }
        }
    }

    /// <summary>The adaptive codec's range energy comes from the range words, so it is FP32's too; the 16-bit gradient square is summed in FP32's order.</summary>
    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void RangeEnergyAndGradientSquareEqualFp32OnTheWidenedValues(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<StashCodecOps>();
        var reduce = backend.Get<ReduceOps>();
        using var partials = backend.Zeros<float>(ReduceOps.PartialsLength(backend));
        using var wideResult = backend.Zeros<float>(1);
        using var narrowResult = backend.Zeros<float>(1);
        foreach (var n in Lengths.Append(5000))
        {
            const int groupSize = 48, bits = 4;
            var x = Sixteen.Round(format, TestData.Normal(n + 5, n, 2.0, -0.5));
            Array.Fill(x, x[0], 0, Math.Min(groupSize, n)); // a constant group adds nothing
            var words = StashCodecOps.EncodedWords(n, groupSize, bits);
            using var wide = backend.Upload(x);
            using var narrow = new Buffer16(backend, format, x);
            using var wideWords = backend.Zeros<uint>(words);
            using var narrowWords = backend.Zeros<uint>(words);
            ops.Encode(backend.ComputeStream, wideWords.View, wide.View, groupSize, bits, 9);
            Encode16(ops, backend, narrow, narrowWords, groupSize, bits, 9, StashEncodeLayout.Auto);
            ops.RangeEnergy(backend.ComputeStream, wideResult.View, wideWords.View, n, groupSize, bits);
            ops.RangeEnergy(backend.ComputeStream, narrowResult.View, narrowWords.View, n, groupSize, bits);
            float wideEnergy = backend.Download(wideResult)[0], narrowEnergy = backend.Download(narrowResult)[0];
            Assert.True(BitConverter.SingleToUInt32Bits(wideEnergy) == BitConverter.SingleToUInt32Bits(narrowEnergy), $"{format} n={n}: energy {narrowEnergy:G9}, FP32 {wideEnergy:G9}");

            var dY = Sixteen.Round(format, TestData.Normal(3 * n, n, 0.01));
            using var wideGrad = backend.Upload(dY);
            using var narrowGrad = new Buffer16(backend, format, dY);
            reduce.SumOfSquares(backend.ComputeStream, wideResult.View, wideGrad.View, partials.View);
            if (format == Store16.Bf16) reduce.SumOfSquares(backend.ComputeStream, narrowResult.View, narrowGrad.Bf, partials.View);
            else reduce.SumOfSquares(backend.ComputeStream, narrowResult.View, narrowGrad.Fp, partials.View);
            float wideSquare = backend.Download(wideResult)[0], narrowSquare = backend.Download(narrowResult)[0];
            Assert.True(BitConverter.SingleToUInt32Bits(wideSquare) == BitConverter.SingleToUInt32Bits(narrowSquare), $"{format} n={n}: ‖dY‖² {narrowSquare:G9}, FP32 {wideSquare:G9}");
            Assert.True(narrowSquare > 0);
        }
    }

    [Fact]
    public void GenericOverloadsTakeFloatAndRefuseOtherTypes()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<StashCodecOps>();
        var x = TestData.Normal(1, 100);
        var words = StashCodecOps.EncodedWords(x.Length, 16, 8);
        using var input = backend.Upload(x);
        using var a = backend.Zeros<uint>(words);
        using var b = backend.Zeros<uint>(words);
        ops.Encode(backend.ComputeStream, a.View, input.View, 16, 8, 3);
        ops.Encode<float>(backend.ComputeStream, b.View, input.View, 16, 8, 3);
        Assert.Equal(backend.Download(a), backend.Download(b));
        using var ints = backend.Zeros<int>(x.Length);
        var error = Assert.Throws<NotSupportedException>(() => ops.Encode(backend.ComputeStream, a.View, ints.View, 16, 8, 3));
        Assert.Contains("Int32", error.Message);
        Assert.Throws<NotSupportedException>(() => ops.Decode(backend.ComputeStream, ints.View, a.View, 16, 8));
    }

    /// <summary>The PTX test compiles every generic kernel over every storage type; the codec's two are among them.</summary>
    [Fact]
    public void PtxTestCoversTheGenericCodecKernels()
    {
        var names = PtxCompileTests.GenericKernelInstantiations()
            .Where(m => m.DeclaringType == typeof(StashCodecKernels))
            .Select(m => $"{m.Name}<{m.GetGenericArguments()[0].Name}>").ToHashSet();
        foreach (var kernel in new[] { nameof(StashCodecKernels.StashEncodeGenericKernel), nameof(StashCodecKernels.StashDecodeGenericKernel) })
        foreach (var type in new[] { "Single", "Bf16", "Half" })
            Assert.Contains($"{kernel}<{type}>", names);
    }
}
