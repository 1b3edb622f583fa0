// Single-query multi-head attention over a key/value cache, for generating one token at a time.
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Dimensions of one cached-attention call: <c>C</c> channels in <c>NH</c> heads of <c>HeadSize = C / NH</c>,
/// a cache of <c>MaxT</c> positions of which the first <c>Length</c> are attended (the new token's included).
/// </summary>
public readonly struct KvCacheDims
{
    /// <summary>Creates the dims; <paramref name="c"/> must be a multiple of <paramref name="nh"/> and 1 &lt;= length &lt;= maxT (checked by the launcher).</summary>
    public KvCacheDims(int c, int nh, int length, int maxT)
    {
        C = c;
        NH = nh;
        HeadSize = c / nh;
        Length = length;
        MaxT = maxT;
        Scale = 1.0f / MathF.Sqrt(HeadSize);
    }

    /// <summary>Model channels.</summary>
    public readonly int C;

    /// <summary>Number of heads.</summary>
    public readonly int NH;

    /// <summary>Channels per head.</summary>
    public readonly int HeadSize;

    /// <summary>Cached positions attended: keys <c>0 .. Length-1</c>.</summary>
    public readonly int Length;

    /// <summary>Positions the cache holds (its row count).</summary>
    public readonly int MaxT;

    /// <summary>The score scale <c>1 / sqrt(HeadSize)</c>.</summary>
    public readonly float Scale;
}

/// <summary>
/// Kernels for attention of one new query over cached keys and values. Shapes: <c>qkv</c> (3C) is the new token's
/// fused q, k, v (GPT-2 layout); the caches <c>kCache</c>, <c>vCache</c> are (MaxT, C), row <c>t</c> holding position
/// <c>t</c>'s key or value; scores (NH, MaxT). Every output is written by one thread from a sum in a fixed order, so
/// results are deterministic; grid-stride loops make any launch cover any size.
/// </summary>
public static class KvCacheAttentionKernels
{
    /// <summary>
    /// Copies rows <c>0 .. rows-1</c> of the k and v parts of <c>qkv</c> (rows, 3C) into cache rows
    /// <c>position .. position+rows-1</c>.
    /// </summary>
    public static void KvCacheAppendKernel(ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> qkv, int position, int rows, int c)
    {
        long n = (long)rows * c;
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            long row = i / c;
            long col = i - row * c;
            long source = row * 3L * c + col;
            long target = (position + row) * c + col;
            kCache[target] = qkv[source + c];
            vCache[target] = qkv[source + 2L * c];
        }
    }

    /// <summary><c>scores[h, j] = scale * q[h] . kCache[j, h]</c> for heads <c>h</c> and keys <c>j &lt; Length</c>.</summary>
    public static void KvCacheScoresKernel(ArrayView<float> scores, ArrayView<float> qkv, ArrayView<float> kCache, KvCacheDims d)
    {
        long n = (long)d.NH * d.Length;
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            int h = (int)(i / d.Length);
            int j = (int)(i - (long)h * d.Length);
            long q = (long)h * d.HeadSize;
            long k = (long)j * d.C + q;
            float sum = 0f;
            for (int e = 0; e < d.HeadSize; e++)
                sum += qkv[q + e] * kCache[k + e];
            scores[(long)h * d.MaxT + j] = sum * d.Scale;
        }
    }

    /// <summary>
    /// <c>output[h*hs + e] = sum_j softmax_j(scores[h, :Length]) * vCache[j, h*hs + e]</c>, the softmax max-subtracted.
    /// Each thread recomputes its head's max and normaliser, so the scores are only read.
    /// </summary>
    public static void KvCacheValuesKernel(ArrayView<float> output, ArrayView<float> scores, ArrayView<float> vCache, KvCacheDims d)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < d.C; i += stride)
        {
            int h = (int)(i / d.HeadSize);
            long row = (long)h * d.MaxT;
            float max = scores[row];
            for (int j = 1; j < d.Length; j++)
                max = XMath.Max(max, scores[row + j]);
            float total = 0f;
            float sum = 0f;
            for (int j = 0; j < d.Length; j++)
            {
                float p = XMath.Exp(scores[row + j] - max);
                total += p;
                sum += p * vCache[(long)j * d.C + i];
            }
            output[i] = sum / total;
        }
    }
}
