// Test helpers for the 16-bit kernels: host rounding to BF16 / FP16, 16-bit device buffers, and the error bounds
// that follow from the storage precision.
using ILGPU;
using L2L.Backends;
using L2L.TestSupport;
using Xunit;
using Half = ILGPU.Half;

namespace L2L.Kernels.Tests;

/// <summary>The 16-bit storage formats under test.</summary>
public enum Store16
{
    /// <summary><see cref="Kernels.Bf16"/>: 8 significant bits, the FP32 range.</summary>
    Bf16,

    /// <summary><see cref="Half"/>: 11 significant bits, largest finite 65504.</summary>
    Fp16,
}

/// <summary>
/// Error model of the 16-bit kernels. A kernel loads 16-bit values (exact widening), computes in FP32 and rounds its
/// result once into 16 bits. The tests round their random inputs to the storage format on the host first and compute
/// the double reference from those rounded inputs, so the only error left is (1) the final rounding, at most
/// <c>u |y|</c> with the unit roundoff <c>u</c> = 2^-8 (BF16) or 2^-11 (FP16), plus half the smallest subnormal
/// spacing for results in the subnormal range; and (2) the FP32 arithmetic inside the kernel, bounded as for the FP32
/// kernel (for a K-term dot product <c>K 2^-24 sum |a_k b_k|</c>). Input rounding (the inputs as they were before they
/// were stored in 16 bits) is a property of the format, not of the kernel: it adds <c>cond(f) u</c>, with cond the
/// relative condition number of the op, and is what a model sees end to end; the tests state it where they check it.
/// </summary>
public static class Sixteen
{
    /// <summary>Both formats, for theories.</summary>
    public static TheoryData<Store16> Formats => new(Store16.Bf16, Store16.Fp16);

    /// <summary>Every backend with both formats, for theories.</summary>
    public static TheoryData<DeviceKind, Store16> Cases
    {
        get
        {
            var data = new TheoryData<DeviceKind, Store16>();
            foreach (var d in TestSupport.Devices.All)
                foreach (var f in Formats)
                    data.Add(d.Data, f.Data);
            return data;
        }
    }

    /// <summary>Unit roundoff: half the spacing of the significands, 2^-8 for BF16 and 2^-11 for FP16.</summary>
    public static double UnitRoundoff(Store16 s) => s == Store16.Bf16 ? Math.Pow(2, -8) : Math.Pow(2, -11);

    /// <summary>Half the smallest subnormal spacing: the absolute rounding error floor (2^-134 for BF16, 2^-25 for FP16).</summary>
    public static double Floor(Store16 s) => s == Store16.Bf16 ? Math.Pow(2, -134) : Math.Pow(2, -25);

    /// <summary>FP32 unit roundoff, for the arithmetic inside the kernels.</summary>
    public const double Fp32 = 1.0 / (1 << 24);

    /// <summary><paramref name="x"/> rounded to the format (nearest even), as FP32.</summary>
    public static float Round(Store16 s, float x) =>
        s == Store16.Bf16 ? Bf16.FromSingle(x).ToSingle() : (float)(System.Half)x;

    /// <summary>Every element rounded to the format.</summary>
    public static float[] Round(Store16 s, float[] x) => x.Select(v => Round(s, v)).ToArray();

    /// <summary>Host FP32 to device FP16 bits (System.Half rounds to nearest even).</summary>
    public static Half ToHalf(float x) => Interop.IntAsFloat(BitConverter.HalfToUInt16Bits((System.Half)x));

    /// <summary>Device FP16 bits to host FP32, exact.</summary>
    public static float FromHalf(Half h) => (float)BitConverter.UInt16BitsToHalf(Interop.FloatAsInt(h));

    /// <summary>Asserts <c>|actual - expected| &lt;= bound</c> element by element (and that finite expectations stay finite).</summary>
    public static void AssertWithin(double[] expected, float[] actual, double[] bound, string what)
    {
        Xunit.Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        var bad = 0;
        var worst = -1;
        var worstRatio = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            var err = Math.Abs(actual[i] - expected[i]);
            var ok = double.IsFinite(actual[i]) && err <= bound[i];
            if (ok) continue;
            bad++;
            var ratio = double.IsFinite(err) ? err / Math.Max(bound[i], double.Epsilon) : double.PositiveInfinity;
            if (worst < 0 || ratio > worstRatio) { worst = i; worstRatio = ratio; }
        }
        if (bad > 0)
            Xunit.Assert.Fail($"{what}: {bad} of {expected.Length} out of bounds; worst [{worst}]: got {actual[worst]:G9}, " +
                $"expected {expected[worst]:G9}, bound {bound[worst]:G3} ({worstRatio:G3}x)");
    }

    /// <summary>The bound of a result that is rounded once into the format after an FP32 computation with relative error <paramref name="fp32Relative"/> and absolute error <paramref name="fp32Absolute"/>.</summary>
    public static double[] Bound(Store16 s, double[] expected, double fp32Relative, double fp32Absolute = 0) =>
        expected.Select(e => (UnitRoundoff(s) + fp32Relative) * Math.Abs(e) + fp32Absolute + Floor(s)).ToArray();
}

/// <summary>A device buffer in one of the 16-bit formats, filled from and read back as FP32.</summary>
public sealed class Buffer16 : IDisposable
{
    private readonly Backend _backend;
    private readonly DeviceBuffer<Bf16>? _bf16;
    private readonly DeviceBuffer<Half>? _fp16;

    /// <summary>Uploads <paramref name="values"/> rounded to <paramref name="format"/>.</summary>
    public Buffer16(Backend backend, Store16 format, float[] values)
    {
        _backend = backend;
        Format = format;
        if (format == Store16.Bf16)
            _bf16 = backend.Upload(values.Select(Bf16.FromSingle).ToArray());
        else
            _fp16 = backend.Upload(values.Select(Sixteen.ToHalf).ToArray());
    }

    /// <summary>A zeroed buffer of <paramref name="length"/> elements.</summary>
    public Buffer16(Backend backend, Store16 format, long length)
        : this(backend, format, new float[length])
    {
    }

    /// <summary>The format.</summary>
    public Store16 Format { get; }

    /// <summary>The BF16 view (only for <see cref="Store16.Bf16"/>).</summary>
    public ArrayView<Bf16> Bf => _bf16!.View;

    /// <summary>The FP16 view (only for <see cref="Store16.Fp16"/>).</summary>
    public ArrayView<Half> Fp => _fp16!.View;

    /// <summary>The contents widened to FP32.</summary>
    public float[] Download() => Format == Store16.Bf16
        ? _backend.Download(_bf16!).Select(b => b.ToSingle()).ToArray()
        : _backend.Download(_fp16!).Select(Sixteen.FromHalf).ToArray();

    /// <summary>Raw 16-bit patterns (for exact comparisons).</summary>
    public ushort[] Bits() => Format == Store16.Bf16
        ? _backend.Download(_bf16!).Select(b => b.Bits).ToArray()
        : _backend.Download(_fp16!).Select(h => Interop.FloatAsInt(h)).ToArray();

    /// <inheritdoc/>
    public void Dispose()
    {
        _bf16?.Dispose();
        _fp16?.Dispose();
    }
}
