// Matrix products for linear layers and attention (tiled, register-blocked GEMM) and the bias gradient.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Shapes and tile geometry of one (batched) matrix product <c>C = alpha * op(A) . op(B) [+ bias] [+ C]</c>,
/// all matrices row-major. Layout <see cref="GemmKernels.LayoutNN"/>: A (M, K), B (K, N);
/// <see cref="GemmKernels.LayoutNT"/>: A (M, K), B (N, K); <see cref="GemmKernels.LayoutTN"/>: A (K, M), B (K, N).
/// The group is <c>ThreadsX * ThreadsY</c> threads; each thread computes a 4 x 4 block of C, so a tile of C is
/// <c>(4 * ThreadsY) x (4 * ThreadsX)</c>, and K is consumed <c>TileK</c> at a time through shared memory.
/// </summary>
public readonly struct GemmDims
{
    /// <summary>Creates the dims and derives the number of tiles along M and N from the tile geometry.</summary>
    public GemmDims(int m, int n, int k, int layout, int batch, long strideA, long strideB, long strideC,
        int threadsX, int threadsY, int tileK, float alpha, bool accumulate, bool hasBias)
    {
        M = m; N = n; K = k; Layout = layout; Batch = batch;
        StrideA = strideA; StrideB = strideB; StrideC = strideC;
        ThreadsX = threadsX; ThreadsY = threadsY; TileK = tileK;
        TilesM = (m + 4 * threadsY - 1) / (4 * threadsY);
        TilesN = (n + 4 * threadsX - 1) / (4 * threadsX);
        Alpha = alpha; Accumulate = accumulate ? 1 : 0; HasBias = hasBias ? 1 : 0;
    }

    /// <summary>Rows of C.</summary>
    public readonly int M;
    /// <summary>Columns of C.</summary>
    public readonly int N;
    /// <summary>The contracted dimension.</summary>
    public readonly int K;
    /// <summary><see cref="GemmKernels.LayoutNN"/>, <see cref="GemmKernels.LayoutNT"/> or <see cref="GemmKernels.LayoutTN"/>.</summary>
    public readonly int Layout;
    /// <summary>Number of matrices in the batch.</summary>
    public readonly int Batch;
    /// <summary>Elements between consecutive A matrices.</summary>
    public readonly long StrideA;
    /// <summary>Elements between consecutive B matrices.</summary>
    public readonly long StrideB;
    /// <summary>Elements between consecutive C matrices.</summary>
    public readonly long StrideC;
    /// <summary>Threads along the columns of a tile.</summary>
    public readonly int ThreadsX;
    /// <summary>Threads along the rows of a tile.</summary>
    public readonly int ThreadsY;
    /// <summary>Depth of the K slices staged in shared memory.</summary>
    public readonly int TileK;
    /// <summary>Tiles along M per matrix.</summary>
    public readonly int TilesM;
    /// <summary>Tiles along N per matrix.</summary>
    public readonly int TilesN;
    /// <summary>Scale of the product.</summary>
    public readonly float Alpha;
    /// <summary>1 to add the product to C, 0 to overwrite C.</summary>
    public readonly int Accumulate;
    /// <summary>1 to add <c>bias[col]</c> to every row.</summary>
    public readonly int HasBias;

    /// <summary>Floats of dynamic shared memory the kernel needs: the A and B slices, each padded by one column.</summary>
    public int SharedFloats => TileK * (4 * ThreadsY + 1) + TileK * (4 * ThreadsX + 1);
}

/// <summary>Four floats, 16 bytes: shared-memory reads of this type compile to one vector load.</summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
internal struct Float4
{
    public Float4(float x, float y, float z, float w)
    {
        X = x; Y = y; Z = z; W = w;
    }

    public float X, Y, Z, W;
}

/// <summary>
/// General matrix products. Each group of <c>ThreadsX * ThreadsY</c> threads loops over output tiles
/// (tile index <c>Grid.IdxX, Grid.IdxX + Grid.DimX, ...</c> over all matrices of the batch), stages K slices of A
/// and B in shared memory and keeps a 4 x 4 block of C per thread in scalar registers (ILGPU 1.5.3 does not
/// unroll loops, and a local array would spill). Every load and store is bounds-checked, so any M, N, K work.
/// Sums over K run in a fixed order: results are deterministic for a given tile geometry.
/// </summary>
public static class GemmKernels
{
    /// <summary>C = A . B with A (M, K), B (K, N).</summary>
    public const int LayoutNN = 0;
    /// <summary>C = A . B^T with A (M, K), B (N, K).</summary>
    public const int LayoutNT = 1;
    /// <summary>C = A^T . B with A (K, M), B (K, N).</summary>
    public const int LayoutTN = 2;

    /// <summary>
    /// <c>C_i (M, N) = alpha * op(A_i) . op(B_i) [+ bias broadcast over rows] [+ C_i]</c> for i in [0, Batch),
    /// with A_i at <c>i * StrideA</c>, B_i at <c>i * StrideB</c>, C_i at <c>i * StrideC</c>; shapes per
    /// <see cref="GemmDims"/>. <c>bias</c> (N) is read only when <c>HasBias</c> is 1. Needs
    /// <see cref="GemmDims.SharedFloats"/> floats of dynamic shared memory and a group of exactly
    /// <c>ThreadsX * ThreadsY</c> threads. <c>c</c> must not alias <c>a</c> or <c>b</c>.
    /// </summary>
    public static void GemmKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d) =>
        GemmGenericKernel<float, Fp32Storage, float, Fp32Storage>(c, a, b, bias, d);

    /// <summary>
    /// <see cref="GemmKernel"/> over storage types: A and B of <typeparamref name="TIn"/>, C and bias of
    /// <typeparamref name="TOut"/> (e.g. BF16 operands into an FP32 weight gradient). Operands are widened into the
    /// FP32 shared tiles, products accumulate in FP32 registers, and each result (with bias and the old C, both
    /// widened) is rounded once into C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void GemmGenericKernel<TIn, SIn, TOut, SOut>(ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b, ArrayView<TOut> bias, GemmDims d)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
    {
        var sIn = default(SIn);
        var shared = SharedMemory.GetDynamic<float>();
        int threadsX = d.ThreadsX, threadsY = d.ThreadsY, tileK = d.TileK;
        int tileM = 4 * threadsY, tileN = 4 * threadsX;
        // One padding column keeps the transposing stores into shared memory free of bank conflicts.
        int ldA = tileM + 1, ldB = tileN + 1;
        var sA = shared.SubView(0, tileK * ldA);
        var sB = shared.SubView(tileK * ldA, tileK * ldB);

        int tid = Group.IdxX;
        int threads = Group.DimX;
        int tx = tid % threadsX;
        int ty = tid / threadsX;
        int M = d.M, N = d.N, K = d.K;
        int tilesPerMatrix = d.TilesM * d.TilesN;
        int totalTiles = tilesPerMatrix * d.Batch;

        for (int t = Grid.IdxX; t < totalTiles; t += Grid.DimX)
        {
            int batch = t / tilesPerMatrix;
            int inMatrix = t - batch * tilesPerMatrix;
            int tileRow = inMatrix / d.TilesN;
            int row0 = tileRow * tileM;
            int col0 = (inMatrix - tileRow * d.TilesN) * tileN;
            long aBase = batch * d.StrideA;
            long bBase = batch * d.StrideB;
            long cBase = batch * d.StrideC;

            float c00 = 0, c01 = 0, c02 = 0, c03 = 0;
            float c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0;
            float c30 = 0, c31 = 0, c32 = 0, c33 = 0;

            for (int k0 = 0; k0 < K; k0 += tileK)
            {
                int kLen = XMath.Min(tileK, K - k0);

                // A slice: sA[kk * ldA + r] = op(A)[row0 + r, k0 + kk]; consecutive threads read consecutive addresses.
                if (d.Layout == LayoutTN)
                {
                    for (int i = tid; i < tileM * kLen; i += threads)
                    {
                        int kk = i / tileM;
                        int r = i - kk * tileM;
                        int row = row0 + r;
                        sA[kk * ldA + r] = row < M ? sIn.ToFloat(a[aBase + (long)(k0 + kk) * M + row]) : 0f;
                    }
                }
                else
                {
                    for (int i = tid; i < tileM * kLen; i += threads)
                    {
                        int r = i / kLen;
                        int kk = i - r * kLen;
                        int row = row0 + r;
                        sA[kk * ldA + r] = row < M ? sIn.ToFloat(a[aBase + (long)row * K + k0 + kk]) : 0f;
                    }
                }

                // B slice: sB[kk * ldB + j] = op(B)[k0 + kk, col0 + j].
                if (d.Layout == LayoutNT)
                {
                    for (int i = tid; i < tileN * kLen; i += threads)
                    {
                        int j = i / kLen;
                        int kk = i - j * kLen;
                        int col = col0 + j;
                        sB[kk * ldB + j] = col < N ? sIn.ToFloat(b[bBase + (long)col * K + k0 + kk]) : 0f;
                    }
                }
                else
                {
                    for (int i = tid; i < tileN * kLen; i += threads)
                    {
                        int kk = i / tileN;
                        int j = i - kk * tileN;
                        int col = col0 + j;
                        sB[kk * ldB + j] = col < N ? sIn.ToFloat(b[bBase + (long)(k0 + kk) * N + col]) : 0f;
                    }
                }

                Group.Barrier();

                // Thread (tx, ty) owns rows ty + i * threadsY and columns tx + j * threadsX: strided ownership makes
                // neighbouring threads read neighbouring shared words and write neighbouring global addresses.
                int ai = ty;
                int bi = tx;
                for (int kk = 0; kk < kLen; kk++)
                {
                    float a0 = sA[ai];
                    float a1 = sA[ai + threadsY];
                    float a2 = sA[ai + 2 * threadsY];
                    float a3 = sA[ai + 3 * threadsY];
                    float b0 = sB[bi];
                    float b1 = sB[bi + threadsX];
                    float b2 = sB[bi + 2 * threadsX];
                    float b3 = sB[bi + 3 * threadsX];
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                    ai += ldA;
                    bi += ldB;
                }

                Group.Barrier();
            }

            if (ty < threadsY)
            {
                int col = col0 + tx;
                StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + ty, col, threadsX, c00, c01, c02, c03);
                StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + ty + threadsY, col, threadsX, c10, c11, c12, c13);
                StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + ty + 2 * threadsY, col, threadsX, c20, c21, c22, c23);
                StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + ty + 3 * threadsY, col, threadsX, c30, c31, c32, c33);
            }
        }
    }

    /// <summary>
    /// The same product as <see cref="GemmKernel"/> without shared memory or barriers, for the CPU accelerator, whose
    /// simulated threads are OS threads and whose group barriers cost far more than the arithmetic between them.
    /// Each thread computes 4 x 4 blocks of C (block index <c>Grid.GlobalIndex.X, + Grid.DimX * Group.DimX, ...</c>)
    /// straight from A and B, which the CPU's caches reuse. Shapes per <see cref="GemmDims"/> with
    /// <c>ThreadsX = ThreadsY = 1</c> (so the tiles are the 4 x 4 blocks); <c>TileK</c> is unused. Any launch covers any shape.
    /// </summary>
    public static void GemmDirectKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d) =>
        GemmDirectGenericKernel<float, Fp32Storage, float, Fp32Storage>(c, a, b, bias, d);

    /// <summary>
    /// <see cref="GemmDirectKernel"/> over storage types, as <see cref="GemmGenericKernel{TIn, SIn, TOut, SOut}"/>:
    /// operands widened on load, FP32 accumulation, one rounding into C.
    /// </summary>
    public static void GemmDirectGenericKernel<TIn, SIn, TOut, SOut>(ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b, ArrayView<TOut> bias, GemmDims d)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
    {
        var sIn = default(SIn);
        int M = d.M, N = d.N, K = d.K;
        int blocksPerMatrix = d.TilesM * d.TilesN;
        int totalBlocks = blocksPerMatrix * d.Batch;
        int stride = Grid.DimX * Group.DimX;
        for (int t = Grid.GlobalIndex.X; t < totalBlocks; t += stride)
        {
            int batch = t / blocksPerMatrix;
            int inMatrix = t - batch * blocksPerMatrix;
            int blockRow = inMatrix / d.TilesN;
            int row0 = blockRow * 4;
            int col0 = (inMatrix - blockRow * d.TilesN) * 4;
            // Rows and columns past the edge read the last valid one; their results are never stored.
            int r1 = XMath.Min(row0 + 1, M - 1), r2 = XMath.Min(row0 + 2, M - 1), r3 = XMath.Min(row0 + 3, M - 1);
            int j1 = XMath.Min(col0 + 1, N - 1), j2 = XMath.Min(col0 + 2, N - 1), j3 = XMath.Min(col0 + 3, N - 1);
            long aBase = batch * d.StrideA;
            long bBase = batch * d.StrideB;

            // Element (row, p) of op(A) is at aBase + row * aRow + p * aStep; element (p, col) of op(B) at bBase + p * bStep + col * bCol.
            long aRow = d.Layout == LayoutTN ? 1 : K;
            long aStep = d.Layout == LayoutTN ? M : 1;
            long bCol = d.Layout == LayoutNT ? K : 1;
            long bStep = d.Layout == LayoutNT ? 1 : N;
            long a0 = aBase + row0 * aRow, a1 = aBase + r1 * aRow, a2 = aBase + r2 * aRow, a3 = aBase + r3 * aRow;
            long b0 = bBase + col0 * bCol, b1 = bBase + j1 * bCol, b2 = bBase + j2 * bCol, b3 = bBase + j3 * bCol;

            float c00 = 0, c01 = 0, c02 = 0, c03 = 0;
            float c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0;
            float c30 = 0, c31 = 0, c32 = 0, c33 = 0;
            for (int p = 0; p < K; p++)
            {
                float x0 = sIn.ToFloat(a[a0]), x1 = sIn.ToFloat(a[a1]), x2 = sIn.ToFloat(a[a2]), x3 = sIn.ToFloat(a[a3]);
                float y0 = sIn.ToFloat(b[b0]), y1 = sIn.ToFloat(b[b1]), y2 = sIn.ToFloat(b[b2]), y3 = sIn.ToFloat(b[b3]);
                c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
                c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
                c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
                c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
                a0 += aStep; a1 += aStep; a2 += aStep; a3 += aStep;
                b0 += bStep; b1 += bStep; b2 += bStep; b3 += bStep;
            }

            long cBase = batch * d.StrideC;
            StoreRow<TOut, SOut>(c, bias, d, cBase, row0, col0, 1, c00, c01, c02, c03);
            StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + 1, col0, 1, c10, c11, c12, c13);
            StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + 2, col0, 1, c20, c21, c22, c23);
            StoreRow<TOut, SOut>(c, bias, d, cBase, row0 + 3, col0, 1, c30, c31, c32, c33);
        }
    }

    /// <summary>Rows and columns of C per tile of the large-tile kernels.</summary>
    public const int LargeTile = 128;

    /// <summary>K depth staged per step by the large-tile kernels.</summary>
    public const int LargeTileK = 8;

    /// <summary>Threads per group of the large-tile kernels (16 x 16, each owning 8 x 8 outputs).</summary>
    public const int LargeTileThreads = 256;

    /// <summary>
    /// <see cref="LayoutNN"/> product with 128 x 128 tiles (see <see cref="GemmLargeTiles"/>); <c>d</c> built with
    /// <c>ThreadsX = ThreadsY = 32</c> so that its tile counts are for 128 x 128 tiles.
    /// </summary>
    public static void GemmLargeTilesNNKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d) =>
        GemmLargeTiles<float, Fp32Storage, float, Fp32Storage>(c, a, b, bias, d, LayoutNN);

    /// <summary><see cref="GemmLargeTilesNNKernel"/> over storage types, as <see cref="GemmGenericKernel{TIn, SIn, TOut, SOut}"/>.</summary>
    public static void GemmLargeTilesNNGenericKernel<TIn, SIn, TOut, SOut>(ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b, ArrayView<TOut> bias, GemmDims d)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
        => GemmLargeTiles<TIn, SIn, TOut, SOut>(c, a, b, bias, d, LayoutNN);

    /// <summary><see cref="LayoutNT"/> product with 128 x 128 tiles; as <see cref="GemmLargeTilesNNKernel"/>.</summary>
    public static void GemmLargeTilesNTKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d) =>
        GemmLargeTiles<float, Fp32Storage, float, Fp32Storage>(c, a, b, bias, d, LayoutNT);

    /// <summary><see cref="GemmLargeTilesNTKernel"/> over storage types, as <see cref="GemmGenericKernel{TIn, SIn, TOut, SOut}"/>.</summary>
    public static void GemmLargeTilesNTGenericKernel<TIn, SIn, TOut, SOut>(ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b, ArrayView<TOut> bias, GemmDims d)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
        => GemmLargeTiles<TIn, SIn, TOut, SOut>(c, a, b, bias, d, LayoutNT);

    /// <summary><see cref="LayoutTN"/> product with 128 x 128 tiles; as <see cref="GemmLargeTilesNNKernel"/>.</summary>
    public static void GemmLargeTilesTNKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d) =>
        GemmLargeTiles<float, Fp32Storage, float, Fp32Storage>(c, a, b, bias, d, LayoutTN);

    /// <summary><see cref="GemmLargeTilesTNKernel"/> over storage types, as <see cref="GemmGenericKernel{TIn, SIn, TOut, SOut}"/>.</summary>
    public static void GemmLargeTilesTNGenericKernel<TIn, SIn, TOut, SOut>(ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b, ArrayView<TOut> bias, GemmDims d)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
        => GemmLargeTiles<TIn, SIn, TOut, SOut>(c, a, b, bias, d, LayoutTN);

    /// <summary>
    /// The GPU product: groups of <see cref="LargeTileThreads"/> threads compute 128 x 128 tiles of C, thread
    /// (tx, ty) = (tid % 16, tid / 16) owning the 8 x 8 outputs at rows <c>4ty..4ty+3, 64+4ty..64+4ty+3</c> and the
    /// same columns in tx: two contiguous 4-vectors each way, so every shared-memory read is a 16-byte vector and a
    /// warp's reads hit distinct banks. K advances 8 at a time through two shared buffers: the next slice is read
    /// from global memory into registers while the current one is multiplied, then stored into the other buffer,
    /// with one barrier per slice. <paramref name="layout"/> is a constant at every call, so each public kernel
    /// compiles to one layout. Offsets inside a matrix are 32-bit (the launcher checks they fit), tiles wholly
    /// inside C and K slices wholly inside K take a path with no bounds checks, and the inner loop is unrolled by
    /// hand into 64 scalar accumulators (ILGPU 1.5.3 does not unroll; a local array would spill).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GemmLargeTiles<TIn, SIn, TOut, SOut>(ArrayView<TOut> c, ArrayView<TIn> a, ArrayView<TIn> b, ArrayView<TOut> bias, GemmDims d, int layout)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
    {
        // [buffer][k][128 rows or columns], as 4-vectors for the reads and as floats for the transposing stores.
        var sA4 = SharedMemory.Allocate<Float4>(2 * LargeTileK * LargeTile / 4);
        var sB4 = SharedMemory.Allocate<Float4>(2 * LargeTileK * LargeTile / 4);
        var sA = sA4.Cast<float>();
        var sB = sB4.Cast<float>();
        int tid = Group.IdxX;
        int tx = tid & 15;
        int ty = tid >> 4;
        int M = d.M, N = d.N, K = d.K;
        int tilesPerMatrix = d.TilesM * d.TilesN;
        int totalTiles = tilesPerMatrix * d.Batch;
        int kTiles = (K + LargeTileK - 1) / LargeTileK;

        // Loader coordinates. Along K (A in NN/NT, B in NT): line tid/2, k 4*(tid%2)..+3.
        // Along M or N (A in TN, B in NN/TN): k tid/32, lines 4*(tid%32)..+3.
        bool aAlongK = layout != LayoutTN;
        bool bAlongK = layout == LayoutNT;
        int lineK = tid >> 1, kOfLineK = (tid & 1) * 4;
        int kOfLine = tid >> 5, lineOfK = (tid & 31) * 4;

        for (int t = Grid.IdxX; t < totalTiles; t += Grid.DimX)
        {
            int batch = t / tilesPerMatrix;
            int inMatrix = t - batch * tilesPerMatrix;
            int tileRow = inMatrix / d.TilesN;
            int row0 = tileRow * LargeTile;
            int col0 = (inMatrix - tileRow * d.TilesN) * LargeTile;
            var am = a.SubView(batch * d.StrideA, (long)M * K);
            var bm = b.SubView(batch * d.StrideB, (long)K * N);
            long cBase = batch * d.StrideC;
            bool interior = row0 + LargeTile <= M && col0 + LargeTile <= N;

            // 32-bit offsets of this thread's first loads, and their step per K slice.
            int aOff = aAlongK ? (row0 + lineK) * K + kOfLineK : kOfLine * M + row0 + lineOfK;
            int aStep = aAlongK ? LargeTileK : LargeTileK * M;
            int bOff = bAlongK ? (col0 + lineK) * K + kOfLineK : kOfLine * N + col0 + lineOfK;
            int bStep = bAlongK ? LargeTileK : LargeTileK * N;
            // Where the four loaded values go in a buffer: along K they are 128 apart, along M/N adjacent.
            int aStore = aAlongK ? kOfLineK * LargeTile + lineK : kOfLine * LargeTile + lineOfK;
            int aStoreStep = aAlongK ? LargeTile : 1;
            int bStore = bAlongK ? kOfLineK * LargeTile + lineK : kOfLine * LargeTile + lineOfK;
            int bStoreStep = bAlongK ? LargeTile : 1;

            float ra0, ra1, ra2, ra3, rb0, rb1, rb2, rb3;
            LoadFour<TIn, SIn>(am, aOff, 0, aAlongK, row0 + lineK, kOfLineK, kOfLine, row0 + lineOfK, M, K, interior && LargeTileK <= K,
                out ra0, out ra1, out ra2, out ra3);
            LoadFour<TIn, SIn>(bm, bOff, 0, bAlongK, col0 + lineK, kOfLineK, kOfLine, col0 + lineOfK, N, K, interior && LargeTileK <= K,
                out rb0, out rb1, out rb2, out rb3);
            sA[aStore] = ra0; sA[aStore + aStoreStep] = ra1; sA[aStore + 2 * aStoreStep] = ra2; sA[aStore + 3 * aStoreStep] = ra3;
            sB[bStore] = rb0; sB[bStore + bStoreStep] = rb1; sB[bStore + 2 * bStoreStep] = rb2; sB[bStore + 3 * bStoreStep] = rb3;
            Group.Barrier();

            float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c04 = 0, c05 = 0, c06 = 0, c07 = 0;
            float c10 = 0, c11 = 0, c12 = 0, c13 = 0, c14 = 0, c15 = 0, c16 = 0, c17 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c24 = 0, c25 = 0, c26 = 0, c27 = 0;
            float c30 = 0, c31 = 0, c32 = 0, c33 = 0, c34 = 0, c35 = 0, c36 = 0, c37 = 0;
            float c40 = 0, c41 = 0, c42 = 0, c43 = 0, c44 = 0, c45 = 0, c46 = 0, c47 = 0;
            float c50 = 0, c51 = 0, c52 = 0, c53 = 0, c54 = 0, c55 = 0, c56 = 0, c57 = 0;
            float c60 = 0, c61 = 0, c62 = 0, c63 = 0, c64 = 0, c65 = 0, c66 = 0, c67 = 0;
            float c70 = 0, c71 = 0, c72 = 0, c73 = 0, c74 = 0, c75 = 0, c76 = 0, c77 = 0;
            for (int kt = 0; kt < kTiles; kt++)
            {
                int buffer = kt & 1;
                bool more = kt + 1 < kTiles;
                if (more)
                {
                    int k0 = (kt + 1) * LargeTileK;
                    aOff += aStep;
                    bOff += bStep;
                    bool full = interior && k0 + LargeTileK <= K;
                    LoadFour<TIn, SIn>(am, aOff, k0, aAlongK, row0 + lineK, kOfLineK, kOfLine, row0 + lineOfK, M, K, full,
                        out ra0, out ra1, out ra2, out ra3);
                    LoadFour<TIn, SIn>(bm, bOff, k0, bAlongK, col0 + lineK, kOfLineK, kOfLine, col0 + lineOfK, N, K, full,
                        out rb0, out rb1, out rb2, out rb3);
                }

                int ai = buffer * (LargeTileK * LargeTile / 4) + ty;
                int bi = buffer * (LargeTileK * LargeTile / 4) + tx;
                for (int kk = 0; kk < LargeTileK; kk++)
                {
                    Float4 x = sA4[ai], y = sA4[ai + 16], u = sB4[bi], v = sB4[bi + 16];
                    float a0 = x.X, a1 = x.Y, a2 = x.Z, a3 = x.W, a4 = y.X, a5 = y.Y, a6 = y.Z, a7 = y.W;
                    float b0 = u.X, b1 = u.Y, b2 = u.Z, b3 = u.W, b4 = v.X, b5 = v.Y, b6 = v.Z, b7 = v.W;
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3; c04 += a0 * b4; c05 += a0 * b5; c06 += a0 * b6; c07 += a0 * b7;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3; c14 += a1 * b4; c15 += a1 * b5; c16 += a1 * b6; c17 += a1 * b7;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3; c24 += a2 * b4; c25 += a2 * b5; c26 += a2 * b6; c27 += a2 * b7;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3; c34 += a3 * b4; c35 += a3 * b5; c36 += a3 * b6; c37 += a3 * b7;
                    c40 += a4 * b0; c41 += a4 * b1; c42 += a4 * b2; c43 += a4 * b3; c44 += a4 * b4; c45 += a4 * b5; c46 += a4 * b6; c47 += a4 * b7;
                    c50 += a5 * b0; c51 += a5 * b1; c52 += a5 * b2; c53 += a5 * b3; c54 += a5 * b4; c55 += a5 * b5; c56 += a5 * b6; c57 += a5 * b7;
                    c60 += a6 * b0; c61 += a6 * b1; c62 += a6 * b2; c63 += a6 * b3; c64 += a6 * b4; c65 += a6 * b5; c66 += a6 * b6; c67 += a6 * b7;
                    c70 += a7 * b0; c71 += a7 * b1; c72 += a7 * b2; c73 += a7 * b3; c74 += a7 * b4; c75 += a7 * b5; c76 += a7 * b6; c77 += a7 * b7;
                    ai += LargeTile / 4;
                    bi += LargeTile / 4;
                }

                if (more)
                {
                    int next = (buffer ^ 1) * (LargeTileK * LargeTile);
                    int sa = next + aStore, sb = next + bStore;
                    sA[sa] = ra0; sA[sa + aStoreStep] = ra1; sA[sa + 2 * aStoreStep] = ra2; sA[sa + 3 * aStoreStep] = ra3;
                    sB[sb] = rb0; sB[sb + bStoreStep] = rb1; sB[sb + 2 * bStoreStep] = rb2; sB[sb + 3 * bStoreStep] = rb3;
                }
                // The stores above fill the buffer the next slice reads; the one read here is not written until after
                // the next barrier, so one barrier per slice suffices.
                Group.Barrier();
            }

            {
                int rowA = row0 + 4 * ty;
                int colB = col0 + 4 * tx;
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 0, colB, interior, c00, c01, c02, c03, c04, c05, c06, c07);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 1, colB, interior, c10, c11, c12, c13, c14, c15, c16, c17);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 2, colB, interior, c20, c21, c22, c23, c24, c25, c26, c27);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 3, colB, interior, c30, c31, c32, c33, c34, c35, c36, c37);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 64, colB, interior, c40, c41, c42, c43, c44, c45, c46, c47);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 65, colB, interior, c50, c51, c52, c53, c54, c55, c56, c57);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 66, colB, interior, c60, c61, c62, c63, c64, c65, c66, c67);
                StoreRow8<TOut, SOut>(c, bias, d, cBase, rowA + 67, colB, interior, c70, c71, c72, c73, c74, c75, c76, c77);
            }
        }
    }

    /// <summary>
    /// Four consecutive elements of a matrix at <paramref name="offset"/>: along K when <paramref name="alongK"/> (line
    /// <paramref name="line"/>, k from <c>k0 + k0Line</c>), else along the lines (k = <c>k0 + kLine</c>, lines from
    /// <paramref name="firstLine"/>); elements outside <paramref name="lines"/> x <paramref name="k"/> read as 0, and
    /// with <paramref name="full"/> no check is made. Branches, not selects, guard the loads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadFour<T, S>(ArrayView<T> m, int offset, int k0, bool alongK, int line, int k0Line, int kLine, int firstLine,
        int lines, int k, bool full, out float v0, out float v1, out float v2, out float v3)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        if (full)
        {
            v0 = st.ToFloat(m[offset]);
            v1 = st.ToFloat(m[offset + 1]);
            v2 = st.ToFloat(m[offset + 2]);
            v3 = st.ToFloat(m[offset + 3]);
            return;
        }
        v0 = 0f; v1 = 0f; v2 = 0f; v3 = 0f;
        // One outer condition (the line, or the k row), then four inner ones along the contiguous direction.
        bool outer = alongK ? line < lines : k0 + kLine < k;
        int first = alongK ? k0 + k0Line : firstLine;
        int limit = alongK ? k : lines;
        if (outer)
        {
            if (first < limit) v0 = st.ToFloat(m[offset]);
            if (first + 1 < limit) v1 = st.ToFloat(m[offset + 1]);
            if (first + 2 < limit) v2 = st.ToFloat(m[offset + 2]);
            if (first + 3 < limit) v3 = st.ToFloat(m[offset + 3]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow8<T, S>(ArrayView<T> c, ArrayView<T> bias, GemmDims d, long cBase, int row, int col, bool interior,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
        where T : unmanaged where S : struct, IStorage<T>
    {
        if (!interior)
        {
            StoreRow<T, S>(c, bias, d, cBase, row, col, 1, v0, v1, v2, v3);
            StoreRow<T, S>(c, bias, d, cBase, row, col + 64, 1, v4, v5, v6, v7);
            return;
        }
        long rowBase = cBase + (long)row * d.N;
        StoreInterior<T, S>(c, bias, d, rowBase, col, v0); StoreInterior<T, S>(c, bias, d, rowBase, col + 1, v1);
        StoreInterior<T, S>(c, bias, d, rowBase, col + 2, v2); StoreInterior<T, S>(c, bias, d, rowBase, col + 3, v3);
        StoreInterior<T, S>(c, bias, d, rowBase, col + 64, v4); StoreInterior<T, S>(c, bias, d, rowBase, col + 65, v5);
        StoreInterior<T, S>(c, bias, d, rowBase, col + 66, v6); StoreInterior<T, S>(c, bias, d, rowBase, col + 67, v7);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreInterior<T, S>(ArrayView<T> c, ArrayView<T> bias, GemmDims d, long rowBase, int col, float value)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        float result = d.Alpha * value;
        if (d.HasBias != 0)
            result += st.ToFloat(bias[col]);
        if (d.Accumulate != 0)
            result += st.ToFloat(c[rowBase + col]);
        c[rowBase + col] = st.FromFloat(result);
    }

    private static void StoreRow<T, S>(ArrayView<T> c, ArrayView<T> bias, GemmDims d, long cBase, int row, int col, int colStride,
        float v0, float v1, float v2, float v3)
        where T : unmanaged where S : struct, IStorage<T>
    {
        if (row >= d.M)
            return;
        long rowBase = cBase + (long)row * d.N;
        Store<T, S>(c, bias, d, rowBase, col, v0);
        Store<T, S>(c, bias, d, rowBase, col + colStride, v1);
        Store<T, S>(c, bias, d, rowBase, col + 2 * colStride, v2);
        Store<T, S>(c, bias, d, rowBase, col + 3 * colStride, v3);
    }

    private static void Store<T, S>(ArrayView<T> c, ArrayView<T> bias, GemmDims d, long rowBase, int col, float value)
        where T : unmanaged where S : struct, IStorage<T>
    {
        if (col >= d.N)
            return;
        var st = default(S);
        float result = d.Alpha * value;
        if (d.HasBias != 0)
            result += st.ToFloat(bias[col]);
        if (d.Accumulate != 0)
            result += st.ToFloat(c[rowBase + col]);
        c[rowBase + col] = st.FromFloat(result);
    }

    /// <summary>
    /// <c>dBias (N) += column sums of dOut (rows, N)</c>. The group is <c>columnsPerGroup x (Group.DimX / columnsPerGroup)</c>
    /// threads: each thread sums every <c>(Group.DimX / columnsPerGroup)</c>-th row of one column, then the partial
    /// sums are added in a fixed order, so the result is deterministic. Group size at most 1024 and a multiple of
    /// <c>columnsPerGroup</c>; groups loop over column blocks. Each column's sum is multiplied by <c>scale</c> before it is
    /// added (1 leaves it unchanged bit for bit; a unit-scaled model passes its bias-gradient scale).
    /// </summary>
    public static void BiasBackwardKernel(ArrayView<float> dBias, ArrayView<float> dOut, int rows, int n, int columnsPerGroup, float scale) =>
        BiasBackwardGenericKernel<float, Fp32Storage>(dBias, dOut, rows, n, columnsPerGroup, scale);

    /// <summary>
    /// <see cref="BiasBackwardKernel"/> with <c>dOut</c> in any storage type: widened on load, summed in FP32 and added
    /// to the FP32 <c>dBias</c> (parameter gradients accumulate in FP32 over micro-batches).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BiasBackwardGenericKernel<T, S>(ArrayView<float> dBias, ArrayView<T> dOut, int rows, int n, int columnsPerGroup, float scale)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        var partial = SharedMemory.Allocate<float>(1024);
        int tid = Group.IdxX;
        int lanes = Group.DimX / columnsPerGroup;
        int cx = tid % columnsPerGroup;
        int ry = tid / columnsPerGroup;
        int blocks = (n + columnsPerGroup - 1) / columnsPerGroup;
        for (int block = Grid.IdxX; block < blocks; block += Grid.DimX)
        {
            int col = block * columnsPerGroup + cx;
            float sum = 0f;
            if (col < n && ry < lanes)
            {
                for (int r = ry; r < rows; r += lanes)
                    sum += st.ToFloat(dOut[(long)r * n + col]);
            }
            partial[tid] = sum;
            Group.Barrier();
            if (ry == 0 && col < n)
            {
                float total = 0f;
                for (int l = 0; l < lanes; l++)
                    total += partial[l * columnsPerGroup + cx];
                dBias[col] += total * scale;
            }
            Group.Barrier();
        }
    }
}
