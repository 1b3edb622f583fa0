// AdamW moments stored as BF16 on the host: round-to-nearest on load, stochastic rounding after each update.
namespace L2L.Training.Optim;

/// <summary>How the param server stores a host optimizer's state.</summary>
public enum StatePrecision
{
    /// <summary>FP32, exact.</summary>
    Fp32,
    /// <summary>BF16 (the top half of an FP32), stochastically rounded after each update: half the bytes, not exact.</summary>
    Bf16,
}

/// <summary>
/// BF16 conversions for optimizer state. A BF16 value is the top 16 bits of an FP32, so widening is exact. Narrowing
/// after an update rounds stochastically — the low 16 bits plus a 16-bit hash of (key, element) carry into the kept
/// half — so the stored value is the FP32 value in expectation (unbiased), which keeps tiny AdamW updates of m and v
/// from being rounded away; the hash makes the rounding a pure function of (key, element), independent of threads.
/// </summary>
public static class Bf16State
{
    /// <summary>The FP32 value of BF16 bits <paramref name="bits"/> (exact).</summary>
    public static float Widen(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Round-to-nearest-even narrowing (exact for values that came from BF16). NaN stays NaN.</summary>
    public static ushort RoundNearest(float value)
    {
        var bits = (uint)BitConverter.SingleToInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        var rounded = bits + 0x7FFF + ((bits >> 16) & 1);
        return (ushort)(rounded >> 16);
    }

    /// <summary>Stochastic narrowing with the noise of element <paramref name="index"/> under <paramref name="key"/>.</summary>
    public static ushort RoundStochastic(float value, ulong key, long index)
    {
        var bits = (uint)BitConverter.SingleToInt32Bits(value);
        if (!float.IsFinite(value)) return (ushort)(float.IsNaN(value) ? (bits >> 16) | 0x40 : bits >> 16);
        var noise = (uint)(Kernels.DropoutKernels.Mix(key + (ulong)(index + 1) * 0x9E3779B97F4A7C15UL) >> 48);
        var sum = bits + noise;
        // Carrying into the exponent of the largest finite value would give infinity; keep it finite instead.
        return (sum & 0x7F800000) == 0x7F800000 ? (ushort)(bits >> 16) : (ushort)(sum >> 16);
    }

    /// <summary>Widens <paramref name="source"/> into <paramref name="target"/>.</summary>
    public static void Widen(ReadOnlySpan<ushort> source, Span<float> target)
    {
        for (var i = 0; i < source.Length; i++) target[i] = Widen(source[i]);
    }

    /// <summary>Narrows <paramref name="source"/> into <paramref name="target"/> stochastically, element i using index <paramref name="offset"/> + i.</summary>
    public static void RoundStochastic(ReadOnlySpan<float> source, Span<ushort> target, ulong key, long offset)
    {
        for (var i = 0; i < source.Length; i++) target[i] = RoundStochastic(source[i], key, offset + i);
    }
}
