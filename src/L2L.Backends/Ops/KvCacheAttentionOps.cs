// Launchers for single-query attention over a key/value cache (one new token per call).
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>
/// Appends keys and values to a per-layer cache and attends one new query over it; kernels loaded once per
/// accelerator. Caches are (maxT, C) row-major, q/k/v in GPT-2's fused (3C) layout, scores scale <c>1/sqrt(C/NH)</c>.
/// </summary>
public sealed class KvCacheAttentionOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _append;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, KvCacheDims> _scores;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, KvCacheDims> _values;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public KvCacheAttentionOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _append = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(KvCacheAttentionKernels.KvCacheAppendKernel);
        _scores = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, KvCacheDims>(KvCacheAttentionKernels.KvCacheScoresKernel);
        _values = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, KvCacheDims>(KvCacheAttentionKernels.KvCacheValuesKernel);
    }

    /// <summary>The scores scratch <see cref="Attend"/> needs: (NH, maxT).</summary>
    public static long ScoresLength(int nh, int maxT) => (long)nh * maxT;

    /// <summary>Writes the keys and values of <paramref name="qkv"/> (rows, 3C) into cache rows <c>position .. position+rows-1</c>.</summary>
    public void Append(AcceleratorStream s, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> qkv, int position, int rows, int c, int maxT)
    {
        Check.Positive(rows, nameof(rows));
        Check.Positive(c, nameof(c));
        CheckCaches(kCache, vCache, c, maxT);
        if (position < 0 || position + rows > maxT)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"Rows {position}..{position + rows - 1} do not fit a cache of {maxT} positions.");
        Check.Length(qkv, 3L * rows * c, nameof(qkv));
        _append(s, Launch.Elementwise(_accelerator, (long)rows * c), kCache, vCache, qkv, position, rows, c);
    }

    /// <summary>
    /// <c>output</c> (C) = attention of the query in <paramref name="qkv"/> (3C) over cache rows <c>0 .. length-1</c>
    /// (the new token's own key and value appended first). <paramref name="scores"/> needs <see cref="ScoresLength"/> floats.
    /// </summary>
    public void Attend(AcceleratorStream s, ArrayView<float> output, ArrayView<float> scores, ArrayView<float> qkv,
        ArrayView<float> kCache, ArrayView<float> vCache, int length, int c, int nh, int maxT)
    {
        Check.Positive(c, nameof(c));
        Check.Positive(nh, nameof(nh));
        if (c % nh != 0)
            throw new ArgumentException($"The channel count c = {c} is not a multiple of the head count nh = {nh}.", nameof(c));
        CheckCaches(kCache, vCache, c, maxT);
        if (length < 1 || length > maxT)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"Attend to between 1 and {maxT} cached positions.");
        Check.Length(output, c, nameof(output));
        Check.Length(qkv, 3L * c, nameof(qkv));
        Check.AtLeast(scores, ScoresLength(nh, maxT), nameof(scores));
        var d = new KvCacheDims(c, nh, length, maxT);
        _scores(s, Launch.Elementwise(_accelerator, (long)nh * length), scores, qkv, kCache, d);
        _values(s, Launch.Elementwise(_accelerator, c), output, scores, vCache, d);
    }

    private static void CheckCaches(ArrayView<float> kCache, ArrayView<float> vCache, int c, int maxT)
    {
        Check.Positive(maxT, nameof(maxT));
        Check.Length(kCache, (long)maxT * c, nameof(kCache));
        Check.Length(vCache, (long)maxT * c, nameof(vCache));
    }
}
