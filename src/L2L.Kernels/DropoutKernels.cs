// Dropout with masks from a counter-based hash: no mask buffers, the same mask wherever and whenever it is recomputed.
using ILGPU;

namespace L2L.Kernels;

/// <summary>
/// Inverted dropout, <c>output[i] = keep(i) ? input[i] / (1 - p) : 0</c>, where <c>keep(i)</c> is a pure function of a
/// 64-bit key and the element's index: a SplitMix64 hash of <c>key + (index + 1) * golden</c>, whose top 24 bits are
/// compared with <c>threshold = round(p * 2^24)</c>. The key mixes (seed, step, layer, site), and the index counts
/// elements across the whole minibatch (micro-batch offset included), so the forward, its recomputation in backward
/// and the backward itself see the same mask on every backend, and nothing is stored.
/// </summary>
public static class DropoutKernels
{
    /// <summary>Fixed-point resolution of the keep test: p is rounded to a multiple of 2^-24.</summary>
    public const int ThresholdBits = 24;

    private const ulong Golden = 0x9E3779B97F4A7C15UL;

    /// <summary>
    /// <c>output[i] = keep(key, offset + i) ? input[i] * scale : 0</c>. Shapes: <c>output</c>, <c>input</c> (N);
    /// <c>output</c> may alias <c>input</c>. The backward of dropout is the same call on the output gradient.
    /// </summary>
    public static void DropoutKernel(ArrayView<float> output, ArrayView<float> input, ulong key, long offset, uint threshold, float scale) =>
        DropoutGenericKernel<float, Fp32Storage>(output, input, key, offset, threshold, scale);

    /// <summary><see cref="DropoutKernel"/> over a storage type: the same mask; kept values are scaled in FP32 and rounded once.</summary>
    public static void DropoutGenericKernel<T, S>(ArrayView<T> output, ArrayView<T> input, ulong key, long offset, uint threshold, float scale)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = st.FromFloat(Keep(key, offset + i, threshold) ? st.ToFloat(input[i]) * scale : 0f);
    }

    /// <summary>Whether element <paramref name="index"/> survives under <paramref name="key"/> (probability 1 - threshold / 2^24).</summary>
    public static bool Keep(ulong key, long index, uint threshold) =>
        (uint)(Mix(key + (ulong)(index + 1) * Golden) >> (64 - ThresholdBits)) >= threshold;

    /// <summary>The SplitMix64 finaliser: a bijective 64-bit mix.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The mask key of one dropout site of one layer in one step (host side).</summary>
    public static ulong Key(long seed, long step, int layer, int site)
    {
        var k = Mix((ulong)seed + Golden);
        k = Mix(k + (ulong)step * Golden);
        k = Mix(k + (ulong)(uint)layer * Golden);
        return Mix(k + (ulong)(uint)site * Golden);
    }

    /// <summary>The keep threshold for drop probability <paramref name="p"/> in [0, 1).</summary>
    public static uint Threshold(float p) => (uint)Math.Round(p * (double)(1 << ThresholdBits));
}
