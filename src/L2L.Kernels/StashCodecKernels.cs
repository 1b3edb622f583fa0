// Compressed activation stash: per-group min/max scaling to 8, 4 or 2 bits with unbiased stochastic rounding,
// packed densely into 32-bit words, and the decode back; activations in FP32, BF16 or FP16 storage.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// The stash codec. A tensor of n floats is cut into groups of G values (the last may be partial);
/// each group stores its min and max in FP32 and every value as a b-bit code
/// <c>q = clamp(floor((x - min) * s + u), 0, 2^b - 1)</c> with <c>s = (2^b - 1) / (max - min)</c> and
/// u uniform in [0, 1) from a counter-based hash of (stream key, element index); the decode is
/// <c>x̂ = q / s + min</c>. E[x̂] = x, and |x̂ - x| is below one quantisation step <c>(max - min) / (2^b - 1)</c>.
/// A constant group (min = max) decodes exactly.
/// </summary>
/// <remarks>
/// <para>16-bit activations (<see cref="Bf16"/>, <see cref="ILGPU.Half"/>): the encode widens each value to FP32 (exact)
/// and then does exactly what the FP32 encode does, with the same random stream, so its ranges and codes are bit for
/// bit those of the FP32 encode of the widened values. The decode computes the FP32 value and rounds it once into the
/// storage type (nearest even); the ranges of a 16-bit input are 16-bit values, so there a constant group still decodes
/// exactly and the rounding never leaves [min, max].</para>
/// <para>Encoded layout, all 32-bit words: the payload (<see cref="PayloadWords"/>: value i of the tensor
/// in bits <c>(i mod 32/b) * b</c> of word <c>i / (32/b)</c>), then the ranges (<c>2 * ceil(n / G)</c>
/// words: group g's min and max as FP32 bits). G is a multiple of 16, so every group's codes start at a
/// word boundary (word <c>g * G * b / 32</c>) and groups encode and decode independently.</para>
/// <para>Arithmetic: the fraction <c>t = (x - min) / (max - min) * (2^b - 1)</c> is computed with a division
/// (not a reciprocal) so that t stays in [0, 2^b - 1] for ranges down to subnormals; for a range too wide
/// for FP32 (max - min overflows) both ends and x are halved first. Rounding is
/// <c>floor(t) + (u &lt; t - floor(t))</c>, where <c>t - floor(t)</c> is exact, so the probability of
/// rounding up equals the fraction to within 2^-24 (u has 24 random bits). The decode
/// <c>min + q * (max - min) / (2^b - 1)</c> (= q / s + min) is clamped to [min, max] so rounding at
/// the ends of extreme ranges cannot leave the group's range.</para>
/// </remarks>
public static class StashCodecKernels
{
    /// <summary>Groups must be a multiple of this many values, so every group's codes fill whole 32-bit words at every bit width.</summary>
    public const int GroupMultiple = 16;

    /// <summary>
    /// Encodes <c>input</c> (n) into <c>encoded</c> (<see cref="EncodedWords"/>(n, groupSize, bits)).
    /// With <paramref name="cooperative"/> non-zero each thread group encodes one quantisation group at a
    /// time (grid-stride over groups), reducing min and max through shared memory: the layout for GPUs.
    /// With zero each thread encodes whole quantisation groups on its own, without barriers (grid-stride
    /// over groups by global thread index): the lean layout for the CPU accelerator, where every simulated
    /// thread is an OS thread and a barrier is expensive. Both give the same bits.
    /// </summary>
    public static void StashEncodeKernel(ArrayView<uint> encoded, ArrayView<float> input, int groupSize, int bits, ulong key, int cooperative) =>
        StashEncodeGenericKernel<float, Fp32Storage>(encoded, input, groupSize, bits, key, cooperative);

    /// <summary>
    /// <see cref="StashEncodeKernel"/> of an activation in any storage type: every value is widened to FP32 on load
    /// (exact), then encoded as FP32, so the words equal the FP32 encode of the widened values.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StashEncodeGenericKernel<T, S>(ArrayView<uint> encoded, ArrayView<T> input, int groupSize, int bits, ulong key, int cooperative)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        int n = (int)input.Length;
        int groups = GroupCount(n, groupSize);
        int rangeOffset = PayloadWords(n, bits);
        int perWord = 32 / bits;
        int wordsPerGroup = groupSize / perWord;
        if (cooperative != 0)
        {
            int tid = Group.IdxX;
            for (int g = Grid.IdxX; g < groups; g += Grid.DimX)
            {
                int start = g * groupSize;
                int count = XMath.Min(groupSize, n - start);
                float lo = float.PositiveInfinity;
                float hi = float.NegativeInfinity;
                for (int j = tid; j < count; j += Group.DimX)
                {
                    float v = default(S).ToFloat(input[start + j]);
                    lo = XMath.Min(lo, v);
                    hi = XMath.Max(hi, v);
                }
                hi = GroupReduce.Max(shared, hi);
                lo = -GroupReduce.Max(shared, -lo);
                if (tid == 0)
                {
                    encoded[rangeOffset + 2 * g] = Interop.FloatAsInt(lo);
                    encoded[rangeOffset + 2 * g + 1] = Interop.FloatAsInt(hi);
                }
                int words = (count + perWord - 1) / perWord;
                for (int w = tid; w < words; w += Group.DimX)
                    encoded[g * wordsPerGroup + w] = EncodeWord<T, S>(input, start + w * perWord, XMath.Min(perWord, count - w * perWord), bits, key, lo, hi);
            }
        }
        else
        {
            int threads = Grid.DimX * Group.DimX;
            for (int g = Grid.GlobalIndex.X; g < groups; g += threads)
            {
                int start = g * groupSize;
                int count = XMath.Min(groupSize, n - start);
                float lo = default(S).ToFloat(input[start]);
                float hi = lo;
                for (int j = 1; j < count; j++)
                {
                    float v = default(S).ToFloat(input[start + j]);
                    lo = XMath.Min(lo, v);
                    hi = XMath.Max(hi, v);
                }
                encoded[rangeOffset + 2 * g] = Interop.FloatAsInt(lo);
                encoded[rangeOffset + 2 * g + 1] = Interop.FloatAsInt(hi);
                int words = (count + perWord - 1) / perWord;
                for (int w = 0; w < words; w++)
                    encoded[g * wordsPerGroup + w] = EncodeWord<T, S>(input, start + w * perWord, XMath.Min(perWord, count - w * perWord), bits, key, lo, hi);
            }
        }
    }

    /// <summary>
    /// Decodes <c>encoded</c> (<see cref="EncodedWords"/>(n, groupSize, bits)) into <c>output</c> (n):
    /// grid-stride over payload words, each thread writing the 32 / b values of one word.
    /// </summary>
    public static void StashDecodeKernel(ArrayView<float> output, ArrayView<uint> encoded, int groupSize, int bits) =>
        StashDecodeGenericKernel<float, Fp32Storage>(output, encoded, groupSize, bits);

    /// <summary>
    /// <see cref="StashDecodeKernel"/> into any storage type: each value is computed in FP32 as there, then rounded once
    /// into the storage type (nearest even).
    /// </summary>
    public static void StashDecodeGenericKernel<T, S>(ArrayView<T> output, ArrayView<uint> encoded, int groupSize, int bits)
        where T : unmanaged where S : struct, IStorage<T>
    {
        int n = (int)output.Length;
        int perWord = 32 / bits;
        int payload = PayloadWords(n, bits);
        int wordsPerGroup = groupSize / perWord;
        uint mask = (1u << bits) - 1u;
        float levels = mask;
        int threads = Grid.DimX * Group.DimX;
        for (int w = Grid.GlobalIndex.X; w < payload; w += threads)
        {
            int g = w / wordsPerGroup;
            float lo = Interop.IntAsFloat(encoded[payload + 2 * g]);
            float hi = Interop.IntAsFloat(encoded[payload + 2 * g + 1]);
            uint word = encoded[w];
            int first = w * perWord;
            int count = XMath.Min(perWord, n - first);
            if (!(hi > lo))
            {
                T constant = default(S).FromFloat(lo);
                for (int k = 0; k < count; k++)
                    output[first + k] = constant;
                continue;
            }
            float scale = RangeScale(lo, hi);
            float lowScaled = lo * scale;
            float range = hi * scale - lowScaled;
            float unscale = 1f / scale;
            for (int k = 0; k < count; k++)
            {
                float q = (word >> (k * bits)) & mask;
                // (q / levels) * range rather than q * step (a rounded step would be multiplied by up to 255)
                // or (q * range) / levels (which can overflow).
                float x = (lowScaled + q / levels * range) * unscale;
                output[first + k] = default(S).FromFloat(XMath.Min(XMath.Max(x, lo), hi));
            }
        }
    }

    /// <summary>
    /// <c>energy[0] = Σ_g n_g · (max_g − min_g)²</c> over the groups of one encoded tensor of <paramref name="n"/> values
    /// (n_g values in group g), read from its range words alone: the adaptive codec's measure of how much rounding at
    /// any width perturbs the tensor (the added variance is this over <c>4·(2^b − 1)²</c> at most). One thread group:
    /// each thread sums a fixed stride of groups, then a tree through shared memory, so the same tensor gives the same bits.
    /// A range beyond FP32 gives +Inf.
    /// </summary>
    public static void StashRangeEnergyKernel(ArrayView<float> energy, ArrayView<uint> encoded, int n, int groupSize, int bits)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        int groups = GroupCount(n, groupSize);
        int rangeOffset = PayloadWords(n, bits);
        float sum = 0f;
        for (int g = Group.IdxX; g < groups; g += Group.DimX)
        {
            float lo = Interop.IntAsFloat(encoded[rangeOffset + 2 * g]);
            float hi = Interop.IntAsFloat(encoded[rangeOffset + 2 * g + 1]);
            float range = hi - lo;
            float count = XMath.Min(groupSize, n - g * groupSize);
            sum += count * (range * range);
        }
        sum = GroupReduce.Sum(shared, sum);
        if (Group.IdxX == 0)
            energy[0] = sum;
    }

    /// <summary>The codes of <paramref name="count"/> (at most 32 / b) consecutive values from <paramref name="first"/>, in one word.</summary>
    private static uint EncodeWord<T, S>(ArrayView<T> input, int first, int count, int bits, ulong key, float lo, float hi)
        where T : unmanaged where S : struct, IStorage<T>
    {
        if (!(hi > lo))
            return 0u; // a constant group: every value is the min, exactly
        uint mask = (1u << bits) - 1u;
        float levels = mask;
        float scale = RangeScale(lo, hi);
        float lowScaled = lo * scale;
        float range = hi * scale - lowScaled;
        uint word = 0u;
        for (int k = 0; k < count; k++)
        {
            int i = first + k;
            float t = (default(S).ToFloat(input[i]) * scale - lowScaled) / range * levels;
            t = XMath.Min(XMath.Max(t, 0f), levels);
            float whole = XMath.Floor(t);
            uint q = (uint)whole;
            if (Uniform(key, i) < t - whole)
                q += 1u;
            if (q > mask)
                q = mask;
            word |= q << (k * bits);
        }
        return word;
    }

    /// <summary>1, or 0.5 when max - min overflows FP32 (values that large halve exactly).</summary>
    private static float RangeScale(float lo, float hi) => hi - lo < float.PositiveInfinity ? 1f : 0.5f;

    /// <summary>Words holding the codes of <paramref name="n"/> values at <paramref name="bits"/> bits: ceil(n * b / 32).</summary>
    public static int PayloadWords(int n, int bits) => (int)(((long)n * bits + 31) / 32);

    /// <summary>Quantisation groups of <paramref name="groupSize"/> values in <paramref name="n"/> values (the last may be partial).</summary>
    public static int GroupCount(int n, int groupSize) => (n + groupSize - 1) / groupSize;

    /// <summary>Words of an encoded tensor: the payload, then two range words (min, max) per group.</summary>
    public static long EncodedWords(int n, int groupSize, int bits) => PayloadWords(n, bits) + 2L * GroupCount(n, groupSize);

    /// <summary>
    /// The stream key for one stash tensor, from the run's seed, the step, the stash level (layer) and the
    /// micro-batch: a chain of SplitMix64 finalisers, so neighbouring counters give unrelated streams.
    /// </summary>
    public static ulong StreamKey(ulong seed, long step, int layer, int microBatch)
    {
        ulong h = Mix(seed ^ 0x5DEECE66DUL);
        h = Mix(h + (ulong)step);
        h = Mix(h + (ulong)(uint)layer);
        return Mix(h + (ulong)(uint)microBatch);
    }

    /// <summary>
    /// The uniform number in [0, 1) for element <paramref name="index"/> of the stream <paramref name="key"/>:
    /// the top 24 bits of a SplitMix64 hash of (key, index), so it is exact in FP32. Integer multiplies, shifts and xors only.
    /// </summary>
    public static float Uniform(ulong key, int index)
    {
        ulong z = Mix(key + ((ulong)(uint)index + 1UL) * 0x9E3779B97F4A7C15UL);
        return (uint)(z >> 40) * (1f / 16777216f);
    }

    /// <summary>The SplitMix64 finaliser.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
