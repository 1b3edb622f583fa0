// Multi-head scaled-dot-product attention over a fused qkv tensor (GPT-2 / llm.c layout), forward and backward,
// flash-style: no T x T tensor is stored, only each query row's log-sum-exp; causal, key-length and key-mask masking.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Dimensions and masking of one attention call. Letters: <c>B</c> sequences, <c>T</c> positions,
/// <c>C</c> channels, <c>NH</c> heads of <c>HeadSize = C / NH</c> channels.
/// </summary>
public readonly struct AttentionDims
{
    /// <summary>Creates the dims; <paramref name="c"/> must be a multiple of <paramref name="nh"/> (checked by the launcher).</summary>
    public AttentionDims(int b, int t, int c, int nh, bool causal)
    {
        B = b;
        T = t;
        C = c;
        NH = nh;
        HeadSize = c / nh;
        Causal = causal ? 1 : 0;
        Scale = 1.0f / MathF.Sqrt(HeadSize);
        Tiles = (t + AttentionKernels.Tile - 1) / AttentionKernels.Tile;
        // An odd row stride in shared memory puts the rows of a tile's 32 threads on 32 different banks.
        Stride = HeadSize | 1;
    }

    /// <summary>Batch size.</summary>
    public readonly int B;

    /// <summary>Sequence length (queries and keys).</summary>
    public readonly int T;

    /// <summary>Model channels.</summary>
    public readonly int C;

    /// <summary>Number of heads.</summary>
    public readonly int NH;

    /// <summary>Channels per head.</summary>
    public readonly int HeadSize;

    /// <summary>1 when query <c>t</c> may only attend keys <c>0..t</c>, else 0.</summary>
    public readonly int Causal;

    /// <summary>The score scale <c>1 / sqrt(HeadSize)</c>.</summary>
    public readonly float Scale;

    /// <summary>Tiles of <see cref="AttentionKernels.Tile"/> positions per sequence (the tiled kernels' unit of work).</summary>
    public readonly int Tiles;

    /// <summary>Row stride of a head-sized row in the tiled kernels' shared memory (odd).</summary>
    public readonly int Stride;
}

/// <summary>
/// Attention kernels. Shapes: <c>qkv</c> (B, T, 3C) holding q, k, v in that order along the last dimension,
/// head <c>h</c> using channels <c>h*hs .. h*hs+hs-1</c> of each; output (B, T, C); <c>lse</c> (B, NH, T), the
/// natural log of each query row's softmax denominator including the max, i.e. <c>log sum_j exp(s_j)</c> over the
/// visible keys (negative infinity for a query with none). Key <c>j</c> of sequence <c>b</c> is visible to query
/// <c>t</c> when <c>j &lt; clamp(keyLengths[b], 0, T)</c> (<c>keyLengths</c> (B) or empty: all), <c>keyMask[b*T+j]
/// != 0</c> (<c>keyMask</c> (B*T) or empty: all), and, when causal, <c>j &lt;= t</c>. A query with no visible key
/// gets a zero output and contributes no gradient.
/// </summary>
/// <remarks>
/// Two families compute the same thing. The row kernels give one thread a whole query row (or key row in the
/// backward) with no shared memory and no barriers: the CPU accelerator's path (each simulated thread is an OS
/// thread and a barrier is a thread rendezvous) and the fallback for heads wider than <see cref="MaxTiledHeadSize"/>.
/// The tiled kernels run one group of <see cref="Tile"/> threads per tile of 32 positions of one (b, h), stage
/// the other side's rows through shared memory a tile at a time, and are the GPU path. Every output element is
/// written by one thread from a sum in a fixed order: no atomics, results independent of the launch. Index
/// decomposition is 32-bit and outside the key loops, which only add offsets.
/// </remarks>
public static class AttentionKernels
{
    /// <summary>Positions per tile and threads per group in the tiled kernels.</summary>
    public const int Tile = 32;

    /// <summary>Query rows staged per step in the tiled key/value backward (shared memory is the limit).</summary>
    public const int QueryTile = 16;

    /// <summary>The widest head the tiled kernels take (their shared memory is sized for it).</summary>
    public const int MaxTiledHeadSize = 64;

    private const int RowCapacity = Tile * (MaxTiledHeadSize + 1);
    private const int QueryRowCapacity = QueryTile * (MaxTiledHeadSize + 1);

    /// <summary>
    /// Forward, one thread per query row (b, h, t): online softmax over the visible keys, accumulating the
    /// output row in place (rescaled when the running max grows), then normalised; writes <c>lse</c>.
    /// Shapes: <c>output</c> (B, T, C), <c>lse</c> (B, NH, T), <c>qkv</c> (B, T, 3C), <c>keyLengths</c> (B) or empty,
    /// <c>keyMask</c> (B*T) or empty.
    /// </summary>
    public static void AttentionForwardRowsKernel(ArrayView<float> output, ArrayView<float> lse, ArrayView<float> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d) =>
        AttentionForwardRowsGenericKernel<float, Fp32Storage>(output, output, lse, qkv, keyLengths, keyMask, d);

    /// <summary>
    /// <see cref="AttentionForwardRowsKernel"/> over a storage type for <c>output</c> and <c>qkv</c>: scores, the online
    /// softmax and <c>lse</c> are FP32, the output rows accumulate in the FP32 <c>acc</c> (B, T, C) and are rounded once
    /// when normalised. For FP32 storage <c>acc</c> may be <c>output</c> itself.
    /// </summary>
    public static void AttentionForwardRowsGenericKernel<T, S>(ArrayView<T> output, ArrayView<float> acc, ArrayView<float> lse, ArrayView<T> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        int rows = d.B * d.NH * d.T;
        int stride = Grid.DimX * Group.DimX;
        int c3 = 3 * d.C;
        int hs = d.HeadSize;
        bool masked = keyMask.Length != 0;
        for (int r = Grid.GlobalIndex.X; r < rows; r += stride)
        {
            int t = r % d.T;
            int bh = r / d.T;
            int h = bh % d.NH;
            int b = bh / d.NH;
            int n = KeyCount(keyLengths, d, b, t);
            long seq = (long)b * d.T;
            long q = (seq + t) * c3 + h * hs;
            long k = seq * c3 + d.C + h * hs;
            long o = (seq + t) * d.C + h * hs;
            for (int c = 0; c < hs; c++)
                acc[o + c] = 0f;

            float max = float.NegativeInfinity;
            float sum = 0f;
            for (int j = 0; j < n; j++, k += c3)
            {
                if (masked && keyMask[seq + j] == 0)
                    continue;
                float dot = 0f;
                for (int c = 0; c < hs; c++)
                    dot += st.ToFloat(qkv[q + c]) * st.ToFloat(qkv[k + c]);
                float s = dot * d.Scale;
                long v = k + d.C;
                if (s > max)
                {
                    float correction = XMath.Exp(max - s);
                    sum = sum * correction + 1f;
                    max = s;
                    for (int c = 0; c < hs; c++)
                        acc[o + c] = acc[o + c] * correction + st.ToFloat(qkv[v + c]);
                }
                else
                {
                    float p = XMath.Exp(s - max);
                    sum += p;
                    for (int c = 0; c < hs; c++)
                        acc[o + c] += p * st.ToFloat(qkv[v + c]);
                }
            }
            if (sum > 0f)
            {
                float inv = 1f / sum;
                for (int c = 0; c < hs; c++)
                    output[o + c] = st.FromFloat(acc[o + c] * inv);
                lse[r] = max + XMath.Log(sum);
            }
            else
            {
                for (int c = 0; c < hs; c++)
                    output[o + c] = st.FromFloat(0f);
                lse[r] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>
    /// Backward preprocessing, one thread per query row: <c>delta[b,h,t] = sum_i dOutput[b,t,h,i] * output[b,t,h,i]</c>,
    /// which equals <c>sum_j P[t,j] dP[t,j]</c>, the softmax backward's row term. Shapes: <c>delta</c> (B, NH, T),
    /// <c>dOutput</c> and <c>output</c> (B, T, C).
    /// </summary>
    public static void AttentionBackwardDeltaKernel(ArrayView<float> delta, ArrayView<float> dOutput, ArrayView<float> output, AttentionDims d) =>
        AttentionBackwardDeltaGenericKernel<float, Fp32Storage>(delta, dOutput, output, d);

    /// <summary><see cref="AttentionBackwardDeltaKernel"/> with <c>dOutput</c> and <c>output</c> in a storage type; <c>delta</c> is summed in FP32.</summary>
    public static void AttentionBackwardDeltaGenericKernel<T, S>(ArrayView<float> delta, ArrayView<T> dOutput, ArrayView<T> output, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        int rows = d.B * d.NH * d.T;
        int stride = Grid.DimX * Group.DimX;
        int hs = d.HeadSize;
        for (int r = Grid.GlobalIndex.X; r < rows; r += stride)
        {
            int t = r % d.T;
            int bh = r / d.T;
            int h = bh % d.NH;
            int b = bh / d.NH;
            long o = ((long)b * d.T + t) * d.C + h * hs;
            float sum = 0f;
            for (int c = 0; c < hs; c++)
                sum += st.ToFloat(dOutput[o + c]) * st.ToFloat(output[o + c]);
            delta[r] = sum;
        }
    }

    /// <summary>
    /// Query gradient, one thread per query row: recomputes <c>P[t,j] = exp(s[t,j] - lse[t])</c> for the visible keys and
    /// assigns <c>dq[t] = scale * sum_j P[t,j] (dOutput[t] . v[j] - delta[t]) k[j]</c> into the q part of <c>dQkv</c>.
    /// Shapes: <c>dQkv</c> and <c>qkv</c> (B, T, 3C), <c>dOutput</c> (B, T, C), <c>lse</c> and <c>delta</c> (B, NH, T).
    /// </summary>
    public static void AttentionBackwardQueryRowsKernel(ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d) =>
        AttentionBackwardQueryRowsGenericKernel<float, Fp32Storage>(dQkv, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);

    /// <summary>
    /// <see cref="AttentionBackwardQueryRowsKernel"/> over a storage type for <c>dQkv</c>, <c>dOutput</c> and <c>qkv</c>:
    /// each dq row accumulates in the q part of the FP32 <c>acc</c> (B, T, 3C) and is rounded once into <c>dQkv</c>. For
    /// FP32 storage <c>acc</c> may be <c>dQkv</c> itself.
    /// </summary>
    public static void AttentionBackwardQueryRowsGenericKernel<T, S>(ArrayView<T> dQkv, ArrayView<float> acc, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        int rows = d.B * d.NH * d.T;
        int stride = Grid.DimX * Group.DimX;
        int c3 = 3 * d.C;
        int hs = d.HeadSize;
        bool masked = keyMask.Length != 0;
        for (int r = Grid.GlobalIndex.X; r < rows; r += stride)
        {
            int t = r % d.T;
            int bh = r / d.T;
            int h = bh % d.NH;
            int b = bh / d.NH;
            int n = KeyCount(keyLengths, d, b, t);
            long seq = (long)b * d.T;
            long q = (seq + t) * c3 + h * hs;
            long k = seq * c3 + d.C + h * hs;
            long dy = (seq + t) * d.C + h * hs;
            for (int c = 0; c < hs; c++)
                acc[q + c] = 0f;
            float rowLse = lse[r];
            float rowDelta = delta[r];
            for (int j = 0; j < n; j++, k += c3)
            {
                if (masked && keyMask[seq + j] == 0)
                    continue;
                long v = k + d.C;
                float dot = 0f;
                float dp = 0f;
                for (int c = 0; c < hs; c++)
                {
                    dot += st.ToFloat(qkv[q + c]) * st.ToFloat(qkv[k + c]);
                    dp += st.ToFloat(dOutput[dy + c]) * st.ToFloat(qkv[v + c]);
                }
                float ds = XMath.Exp(dot * d.Scale - rowLse) * (dp - rowDelta) * d.Scale;
                for (int c = 0; c < hs; c++)
                    acc[q + c] += ds * st.ToFloat(qkv[k + c]);
            }
            for (int c = 0; c < hs; c++)
                dQkv[q + c] = st.FromFloat(acc[q + c]);
        }
    }

    /// <summary>
    /// Key and value gradients, one thread per key row (b, h, j): over the queries that see key j, recomputes
    /// <c>P[t,j]</c> and assigns <c>dv[j] = sum_t P[t,j] dOutput[t]</c> and
    /// <c>dk[j] = scale * sum_t P[t,j] (dOutput[t] . v[j] - delta[t]) q[t]</c> into the k and v parts of <c>dQkv</c>.
    /// Shapes as <see cref="AttentionBackwardQueryRowsKernel"/>.
    /// </summary>
    public static void AttentionBackwardKeyRowsKernel(ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d) =>
        AttentionBackwardKeyRowsGenericKernel<float, Fp32Storage>(dQkv, dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);

    /// <summary>
    /// <see cref="AttentionBackwardKeyRowsKernel"/> over a storage type, with the dk and dv rows accumulating in the k and
    /// v parts of the FP32 <c>acc</c> (B, T, 3C) as <see cref="AttentionBackwardQueryRowsGenericKernel{T, S}"/>.
    /// </summary>
    public static void AttentionBackwardKeyRowsGenericKernel<T, S>(ArrayView<T> dQkv, ArrayView<float> acc, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        int rows = d.B * d.NH * d.T;
        int stride = Grid.DimX * Group.DimX;
        int c3 = 3 * d.C;
        int hs = d.HeadSize;
        for (int r = Grid.GlobalIndex.X; r < rows; r += stride)
        {
            int j = r % d.T;
            int bh = r / d.T;
            int h = bh % d.NH;
            int b = bh / d.NH;
            long seq = (long)b * d.T;
            long k = (seq + j) * c3 + d.C + h * hs;
            long v = k + d.C;
            for (int c = 0; c < hs; c++)
            {
                acc[k + c] = 0f;
                acc[v + c] = 0f;
            }
            bool visible = j < KeyLimit(keyLengths, d, b) && (keyMask.Length == 0 || keyMask[seq + j] != 0);
            if (!visible)
            {
                for (int c = 0; c < hs; c++)
                {
                    dQkv[k + c] = st.FromFloat(0f);
                    dQkv[v + c] = st.FromFloat(0f);
                }
                continue;
            }
            int first = d.Causal != 0 ? j : 0;
            long q = (seq + first) * c3 + h * hs;
            long dy = (seq + first) * d.C + h * hs;
            int row = bh * d.T + first;
            for (int t = first; t < d.T; t++, q += c3, dy += d.C, row++)
            {
                float dot = 0f;
                float dp = 0f;
                for (int c = 0; c < hs; c++)
                {
                    dot += st.ToFloat(qkv[q + c]) * st.ToFloat(qkv[k + c]);
                    dp += st.ToFloat(dOutput[dy + c]) * st.ToFloat(qkv[v + c]);
                }
                float p = XMath.Exp(dot * d.Scale - lse[row]);
                float ds = p * (dp - delta[row]) * d.Scale;
                for (int c = 0; c < hs; c++)
                {
                    acc[v + c] += p * st.ToFloat(dOutput[dy + c]);
                    acc[k + c] += ds * st.ToFloat(qkv[q + c]);
                }
            }
            for (int c = 0; c < hs; c++)
            {
                dQkv[k + c] = st.FromFloat(acc[k + c]);
                dQkv[v + c] = st.FromFloat(acc[v + c]);
            }
        }
    }

    /// <summary>
    /// Forward, tiled: a group of <see cref="Tile"/> threads per tile of queries of one (b, h), one query per thread;
    /// q rows and the output accumulators in shared memory, keys and values staged a tile at a time; online softmax
    /// per key. Needs <c>HeadSize &lt;= </c><see cref="MaxTiledHeadSize"/> and groups of exactly <see cref="Tile"/>
    /// threads. Shapes as <see cref="AttentionForwardRowsKernel"/>.
    /// </summary>
    public static void AttentionForwardTiledKernel(ArrayView<float> output, ArrayView<float> lse, ArrayView<float> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d) =>
        AttentionForwardTiledGenericKernel<float, Fp32Storage>(output, lse, qkv, keyLengths, keyMask, d);

    /// <summary>
    /// <see cref="AttentionForwardTiledKernel"/> over a storage type for <c>output</c> and <c>qkv</c>: rows are widened
    /// into the FP32 shared tiles, the output accumulates in FP32 shared memory and is rounded once on store.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AttentionForwardTiledGenericKernel<T, S>(ArrayView<T> output, ArrayView<float> lse, ArrayView<T> qkv,
        ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var sQ = SharedMemory.Allocate<float>(RowCapacity);
        var sO = SharedMemory.Allocate<float>(RowCapacity);
        var sK = SharedMemory.Allocate<float>(RowCapacity);
        var sV = SharedMemory.Allocate<float>(RowCapacity);
        var sVisible = SharedMemory.Allocate<int>(Tile);
        int tid = Group.IdxX;
        int hs = d.HeadSize;
        int ld = d.Stride;
        int c3 = 3 * d.C;
        int tiles = d.B * d.NH * d.Tiles;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int qt = tile % d.Tiles;
            int bh = tile / d.Tiles;
            int h = bh % d.NH;
            int b = bh / d.NH;
            long seq = (long)b * d.T;
            int t0 = qt * Tile;
            int t = t0 + tid;
            int limit = KeyLimit(keyLengths, d, b);
            int n = t < d.T ? (d.Causal != 0 && t + 1 < limit ? t + 1 : limit) : 0;
            int keyEnd = d.Causal != 0 && t0 + Tile < limit ? t0 + Tile : limit;

            StageRows<T, S>(sQ, qkv, seq * c3 + h * hs, t0, d.T, c3, hs, ld, Tile);
            int mine = tid * ld;
            for (int c = 0; c < hs; c++)
                sO[mine + c] = 0f;
            float max = float.NegativeInfinity;
            float sum = 0f;
            for (int k0 = 0; k0 < keyEnd; k0 += Tile)
            {
                Group.Barrier(); // the previous key tile is no longer read
                long kBase = seq * c3 + d.C + h * hs;
                StageRows<T, S>(sK, qkv, kBase, k0, d.T, c3, hs, ld, Tile);
                StageRows<T, S>(sV, qkv, kBase + d.C, k0, d.T, c3, hs, ld, Tile);
                int key = k0 + tid;
                sVisible[tid] = key < limit && (keyMask.Length == 0 || keyMask[seq + key] != 0) ? 1 : 0;
                Group.Barrier();
                int jEnd = n - k0 < Tile ? n - k0 : Tile;
                for (int jj = 0; jj < jEnd; jj++)
                {
                    if (sVisible[jj] == 0)
                        continue;
                    int kr = jj * ld;
                    float dot = 0f;
                    for (int c = 0; c < hs; c++)
                        dot += sQ[mine + c] * sK[kr + c];
                    float s = dot * d.Scale;
                    if (s > max)
                    {
                        float correction = XMath.Exp(max - s);
                        sum = sum * correction + 1f;
                        max = s;
                        for (int c = 0; c < hs; c++)
                            sO[mine + c] = sO[mine + c] * correction + sV[kr + c];
                    }
                    else
                    {
                        float p = XMath.Exp(s - max);
                        sum += p;
                        for (int c = 0; c < hs; c++)
                            sO[mine + c] += p * sV[kr + c];
                    }
                }
            }
            if (t < d.T)
            {
                long o = (seq + t) * d.C + h * hs;
                float inv = sum > 0f ? 1f / sum : 0f;
                for (int c = 0; c < hs; c++)
                    output[o + c] = st.FromFloat(sO[mine + c] * inv);
                lse[bh * d.T + t] = sum > 0f ? max + XMath.Log(sum) : float.NegativeInfinity;
            }
            Group.Barrier(); // this tile's q rows are no longer read
        }
    }

    /// <summary>
    /// Query gradient, tiled like <see cref="AttentionForwardTiledKernel"/>: each thread keeps its query's q, dOutput
    /// and dq rows in shared memory while key and value tiles stream through. Shapes as
    /// <see cref="AttentionBackwardQueryRowsKernel"/>.
    /// </summary>
    public static void AttentionBackwardQueryTiledKernel(ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d) =>
        AttentionBackwardQueryTiledGenericKernel<float, Fp32Storage>(dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);

    /// <summary><see cref="AttentionBackwardQueryTiledKernel"/> over a storage type: FP32 shared tiles and accumulators, one rounding on store.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AttentionBackwardQueryTiledGenericKernel<T, S>(ArrayView<T> dQkv, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var sQ = SharedMemory.Allocate<float>(RowCapacity);
        var sDy = SharedMemory.Allocate<float>(RowCapacity);
        var sDq = SharedMemory.Allocate<float>(RowCapacity);
        var sK = SharedMemory.Allocate<float>(RowCapacity);
        var sV = SharedMemory.Allocate<float>(RowCapacity);
        var sVisible = SharedMemory.Allocate<int>(Tile);
        int tid = Group.IdxX;
        int hs = d.HeadSize;
        int ld = d.Stride;
        int c3 = 3 * d.C;
        int tiles = d.B * d.NH * d.Tiles;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int qt = tile % d.Tiles;
            int bh = tile / d.Tiles;
            int h = bh % d.NH;
            int b = bh / d.NH;
            long seq = (long)b * d.T;
            int t0 = qt * Tile;
            int t = t0 + tid;
            int limit = KeyLimit(keyLengths, d, b);
            int n = t < d.T ? (d.Causal != 0 && t + 1 < limit ? t + 1 : limit) : 0;
            int keyEnd = d.Causal != 0 && t0 + Tile < limit ? t0 + Tile : limit;

            StageRows<T, S>(sQ, qkv, seq * c3 + h * hs, t0, d.T, c3, hs, ld, Tile);
            StageRows<T, S>(sDy, dOutput, seq * d.C + h * hs, t0, d.T, d.C, hs, ld, Tile);
            int mine = tid * ld;
            for (int c = 0; c < hs; c++)
                sDq[mine + c] = 0f;
            float rowLse = t < d.T ? lse[bh * d.T + t] : 0f;
            float rowDelta = t < d.T ? delta[bh * d.T + t] : 0f;
            for (int k0 = 0; k0 < keyEnd; k0 += Tile)
            {
                Group.Barrier();
                long kBase = seq * c3 + d.C + h * hs;
                StageRows<T, S>(sK, qkv, kBase, k0, d.T, c3, hs, ld, Tile);
                StageRows<T, S>(sV, qkv, kBase + d.C, k0, d.T, c3, hs, ld, Tile);
                int key = k0 + tid;
                sVisible[tid] = key < limit && (keyMask.Length == 0 || keyMask[seq + key] != 0) ? 1 : 0;
                Group.Barrier();
                int jEnd = n - k0 < Tile ? n - k0 : Tile;
                for (int jj = 0; jj < jEnd; jj++)
                {
                    if (sVisible[jj] == 0)
                        continue;
                    int kr = jj * ld;
                    float dot = 0f;
                    float dp = 0f;
                    for (int c = 0; c < hs; c++)
                    {
                        dot += sQ[mine + c] * sK[kr + c];
                        dp += sDy[mine + c] * sV[kr + c];
                    }
                    float ds = XMath.Exp(dot * d.Scale - rowLse) * (dp - rowDelta) * d.Scale;
                    for (int c = 0; c < hs; c++)
                        sDq[mine + c] += ds * sK[kr + c];
                }
            }
            if (t < d.T)
            {
                long q = (seq + t) * c3 + h * hs;
                for (int c = 0; c < hs; c++)
                    dQkv[q + c] = st.FromFloat(sDq[mine + c]);
            }
            Group.Barrier();
        }
    }

    /// <summary>
    /// Key and value gradients, tiled: a group of <see cref="Tile"/> threads per tile of keys of one (b, h), one key per
    /// thread with its k, v, dk and dv rows in shared memory; the queries that can see the tile stream through
    /// <see cref="QueryTile"/> rows at a time with their dOutput, lse and delta. Shapes as
    /// <see cref="AttentionBackwardQueryRowsKernel"/>.
    /// </summary>
    public static void AttentionBackwardKeyTiledKernel(ArrayView<float> dQkv, ArrayView<float> dOutput, ArrayView<float> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d) =>
        AttentionBackwardKeyTiledGenericKernel<float, Fp32Storage>(dQkv, dOutput, qkv, lse, delta, keyLengths, keyMask, d);

    /// <summary><see cref="AttentionBackwardKeyTiledKernel"/> over a storage type: FP32 shared tiles and accumulators, one rounding on store.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AttentionBackwardKeyTiledGenericKernel<T, S>(ArrayView<T> dQkv, ArrayView<T> dOutput, ArrayView<T> qkv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> keyLengths, ArrayView<int> keyMask, AttentionDims d)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var sK = SharedMemory.Allocate<float>(RowCapacity);
        var sV = SharedMemory.Allocate<float>(RowCapacity);
        var sDk = SharedMemory.Allocate<float>(RowCapacity);
        var sDv = SharedMemory.Allocate<float>(RowCapacity);
        var sQ = SharedMemory.Allocate<float>(QueryRowCapacity);
        var sDy = SharedMemory.Allocate<float>(QueryRowCapacity);
        var sLse = SharedMemory.Allocate<float>(QueryTile);
        var sDelta = SharedMemory.Allocate<float>(QueryTile);
        int tid = Group.IdxX;
        int hs = d.HeadSize;
        int ld = d.Stride;
        int c3 = 3 * d.C;
        int tiles = d.B * d.NH * d.Tiles;
        for (int tile = Grid.IdxX; tile < tiles; tile += Grid.DimX)
        {
            int kt = tile % d.Tiles;
            int bh = tile / d.Tiles;
            int h = bh % d.NH;
            int b = bh / d.NH;
            long seq = (long)b * d.T;
            int j0 = kt * Tile;
            int j = j0 + tid;
            int limit = KeyLimit(keyLengths, d, b);
            bool visible = j < limit && (keyMask.Length == 0 || keyMask[seq + j] != 0);

            long kBase = seq * c3 + d.C + h * hs;
            StageRows<T, S>(sK, qkv, kBase, j0, d.T, c3, hs, ld, Tile);
            StageRows<T, S>(sV, qkv, kBase + d.C, j0, d.T, c3, hs, ld, Tile);
            int mine = tid * ld;
            for (int c = 0; c < hs; c++)
            {
                sDk[mine + c] = 0f;
                sDv[mine + c] = 0f;
            }
            // Keys at or past the key limit are seen by nobody; the whole group skips the query loop together.
            int first = d.Causal != 0 ? j0 : 0;
            int queryEnd = j0 < limit ? d.T : first;
            for (int q0 = first; q0 < queryEnd; q0 += QueryTile)
            {
                Group.Barrier();
                StageRows<T, S>(sQ, qkv, seq * c3 + h * hs, q0, d.T, c3, hs, ld, QueryTile);
                StageRows<T, S>(sDy, dOutput, seq * d.C + h * hs, q0, d.T, d.C, hs, ld, QueryTile);
                if (tid < QueryTile)
                {
                    int tq = q0 + tid;
                    sLse[tid] = tq < d.T ? lse[bh * d.T + tq] : 0f;
                    sDelta[tid] = tq < d.T ? delta[bh * d.T + tq] : 0f;
                }
                Group.Barrier();
                if (!visible)
                    continue;
                int iEnd = d.T - q0 < QueryTile ? d.T - q0 : QueryTile;
                // Causal: queries before this key do not see it.
                int iStart = d.Causal != 0 && j > q0 ? j - q0 : 0;
                for (int ii = iStart; ii < iEnd; ii++)
                {
                    int qr = ii * ld;
                    float dot = 0f;
                    float dp = 0f;
                    for (int c = 0; c < hs; c++)
                    {
                        dot += sQ[qr + c] * sK[mine + c];
                        dp += sDy[qr + c] * sV[mine + c];
                    }
                    float p = XMath.Exp(dot * d.Scale - sLse[ii]);
                    float ds = p * (dp - sDelta[ii]) * d.Scale;
                    for (int c = 0; c < hs; c++)
                    {
                        sDv[mine + c] += p * sDy[qr + c];
                        sDk[mine + c] += ds * sQ[qr + c];
                    }
                }
            }
            if (j < d.T)
            {
                long k = (seq + j) * c3 + d.C + h * hs;
                for (int c = 0; c < hs; c++)
                {
                    dQkv[k + c] = st.FromFloat(sDk[mine + c]);
                    dQkv[k + d.C + c] = st.FromFloat(sDv[mine + c]);
                }
            }
            Group.Barrier();
        }
    }

    /// <summary>
    /// Copies rows <c>first .. first+rows-1</c> (head-sized, <paramref name="rowStride"/> apart from <paramref name="baseOffset"/>)
    /// into shared rows <paramref name="ld"/> apart, zeros past <paramref name="t"/>; the group's threads split each row.
    /// </summary>
    private static void StageRows<T, S>(ArrayView<float> shared, ArrayView<T> source, long baseOffset, int first, int t,
        int rowStride, int hs, int ld, int rows)
        where T : unmanaged where S : struct, IStorage<T>
    {
        int tid = Group.IdxX;
        int threads = Group.DimX;
        long src = baseOffset + (long)first * rowStride;
        for (int r = 0; r < rows; r++, src += rowStride)
        {
            int dst = r * ld;
            // A branch, not a select: rows past the end must not be read at all.
            if (first + r < t)
            {
                for (int c = tid; c < hs; c += threads)
                    shared[dst + c] = default(S).ToFloat(source[src + c]);
            }
            else
            {
                for (int c = tid; c < hs; c += threads)
                    shared[dst + c] = 0f;
            }
        }
    }

    /// <summary>The number of keys sequence <paramref name="b"/> lets any query see: its key length clamped to [0, T], or T.</summary>
    private static int KeyLimit(ArrayView<int> keyLengths, AttentionDims d, int b)
    {
        if (keyLengths.Length == 0)
            return d.T;
        int kl = keyLengths[b];
        return kl < 0 ? 0 : kl > d.T ? d.T : kl;
    }

    /// <summary>The prefix of keys query <paramref name="t"/> of sequence <paramref name="b"/> may see before the key mask.</summary>
    private static int KeyCount(ArrayView<int> keyLengths, AttentionDims d, int b, int t)
    {
        int kl = KeyLimit(keyLengths, d, b);
        return d.Causal != 0 && t + 1 < kl ? t + 1 : kl;
    }
}
