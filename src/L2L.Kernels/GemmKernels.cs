// Matrix products for linear layers and attention (tiled, register-blocked GEMM) and the bias gradient.
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
    public static void GemmKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d)
    {
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
                        sA[kk * ldA + r] = row < M ? a[aBase + (long)(k0 + kk) * M + row] : 0f;
                    }
                }
                else
                {
                    for (int i = tid; i < tileM * kLen; i += threads)
                    {
                        int r = i / kLen;
                        int kk = i - r * kLen;
                        int row = row0 + r;
                        sA[kk * ldA + r] = row < M ? a[aBase + (long)row * K + k0 + kk] : 0f;
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
                        sB[kk * ldB + j] = col < N ? b[bBase + (long)col * K + k0 + kk] : 0f;
                    }
                }
                else
                {
                    for (int i = tid; i < tileN * kLen; i += threads)
                    {
                        int kk = i / tileN;
                        int j = i - kk * tileN;
                        int col = col0 + j;
                        sB[kk * ldB + j] = col < N ? b[bBase + (long)(k0 + kk) * N + col] : 0f;
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
                StoreRow(c, bias, d, cBase, row0 + ty, col, threadsX, c00, c01, c02, c03);
                StoreRow(c, bias, d, cBase, row0 + ty + threadsY, col, threadsX, c10, c11, c12, c13);
                StoreRow(c, bias, d, cBase, row0 + ty + 2 * threadsY, col, threadsX, c20, c21, c22, c23);
                StoreRow(c, bias, d, cBase, row0 + ty + 3 * threadsY, col, threadsX, c30, c31, c32, c33);
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
    public static void GemmDirectKernel(ArrayView<float> c, ArrayView<float> a, ArrayView<float> b, ArrayView<float> bias, GemmDims d)
    {
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
                float x0 = a[a0], x1 = a[a1], x2 = a[a2], x3 = a[a3];
                float y0 = b[b0], y1 = b[b1], y2 = b[b2], y3 = b[b3];
                c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
                c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
                c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
                c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
                a0 += aStep; a1 += aStep; a2 += aStep; a3 += aStep;
                b0 += bStep; b1 += bStep; b2 += bStep; b3 += bStep;
            }

            long cBase = batch * d.StrideC;
            StoreRow(c, bias, d, cBase, row0, col0, 1, c00, c01, c02, c03);
            StoreRow(c, bias, d, cBase, row0 + 1, col0, 1, c10, c11, c12, c13);
            StoreRow(c, bias, d, cBase, row0 + 2, col0, 1, c20, c21, c22, c23);
            StoreRow(c, bias, d, cBase, row0 + 3, col0, 1, c30, c31, c32, c33);
        }
    }

    private static void StoreRow(ArrayView<float> c, ArrayView<float> bias, GemmDims d, long cBase, int row, int col, int colStride,
        float v0, float v1, float v2, float v3)
    {
        if (row >= d.M)
            return;
        long rowBase = cBase + (long)row * d.N;
        Store(c, bias, d, rowBase, col, v0);
        Store(c, bias, d, rowBase, col + colStride, v1);
        Store(c, bias, d, rowBase, col + 2 * colStride, v2);
        Store(c, bias, d, rowBase, col + 3 * colStride, v3);
    }

    private static void Store(ArrayView<float> c, ArrayView<float> bias, GemmDims d, long rowBase, int col, float value)
    {
        if (col >= d.N)
            return;
        float result = d.Alpha * value;
        if (d.HasBias != 0)
            result += bias[col];
        if (d.Accumulate != 0)
            result += c[rowBase + col];
        c[rowBase + col] = result;
    }

    /// <summary>
    /// <c>dBias (N) += column sums of dOut (rows, N)</c>. The group is <c>columnsPerGroup x (Group.DimX / columnsPerGroup)</c>
    /// threads: each thread sums every <c>(Group.DimX / columnsPerGroup)</c>-th row of one column, then the partial
    /// sums are added in a fixed order, so the result is deterministic. Group size at most 1024 and a multiple of
    /// <c>columnsPerGroup</c>; groups loop over column blocks.
    /// </summary>
    public static void BiasBackwardKernel(ArrayView<float> dBias, ArrayView<float> dOut, int rows, int n, int columnsPerGroup)
    {
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
                    sum += dOut[(long)r * n + col];
            }
            partial[tid] = sum;
            Group.Barrier();
            if (ry == 0 && col < n)
            {
                float total = 0f;
                for (int l = 0; l < lanes; l++)
                    total += partial[l * columnsPerGroup + cx];
                dBias[col] += total;
            }
            Group.Barrier();
        }
    }
}
